"""Install megatron_redi: ``pip install --no-build-isolation -e .``

``--no-build-isolation`` matters: this file will import torch to build the CUDA extension of csrc/
when a CUDA toolchain is present, and an isolated build environment would fetch a multi-GB CUDA
torch to do so. Without CUDA the package installs as pure Python and every op falls back to its
PyTorch reference.
"""

from setuptools import find_packages, setup

setup(
    name="megatron_redi",
    version="0.1.0",
    description="Megatron-style training for Reinforcement Distillation (REDI) of reasoning models",
    python_requires=">=3.10",
    packages=find_packages(include=["megatron_redi", "megatron_redi.*"]),
    install_requires=[
        "torch>=2.11",
        "safetensors>=0.4",
        "numpy",
        "pyyaml",
        "transformers>=4.45",  # tokenizers, chat templates, HF parity and export
        "tokenizers",
        "tqdm",
    ],
    extras_require={"test": ["pytest>=8"]},
)
