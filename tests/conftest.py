"""Shared fixtures: tiny HF checkpoints, a tiny tokenizer, tokenised data and a short training run, built once per test session."""

import os

import pytest
import torch

# 2 cores: keep each process (and each spawned rank) on one intra-op thread.
torch.set_num_threads(1)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Every collective checks that its tensors are on the process group's device (NCCL's rule), in this
# process and in every rank or tool it starts.
os.environ["MEGATRON_REDI_CHECK_COLLECTIVES"] = "1"


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """``tiny_checkpoint(arch="qwen2", tie_word_embeddings=True, num_kv_heads=2, ...)`` -> path,
    cached per set of arguments."""
    cache = {}

    def build(**kwargs):
        key = tuple(sorted(kwargs.items()))
        if key not in cache:
            from megatron_redi.fixtures import make_tiny_hf_checkpoint
            path = tmp_path_factory.mktemp("ckpt")
            cache[key] = make_tiny_hf_checkpoint(str(path), **kwargs)
        return cache[key]

    return build


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory):
    from megatron_redi.fixtures import make_tiny_tokenizer
    path = str(tmp_path_factory.mktemp("tokenizer"))
    make_tiny_tokenizer(path)
    return path


def pytest_collection_modifyitems(config, items):
    """CUDA tests run where a GPU is; elsewhere they are reported as skipped, with the reason.
    Benchmarks (minutes each) run only when the -m expression names them."""
    no_gpu = pytest.mark.skip(reason="needs a CUDA GPU (run tools/gpu_check.sh on a GPU machine)")
    not_asked = pytest.mark.skip(reason="a benchmark of minutes: run it with pytest -m benchmark")
    asked = "benchmark" in (config.getoption("markexpr") or "")
    for item in items:
        if "cuda" in item.keywords and not torch.cuda.is_available():
            item.add_marker(no_gpu)
        if "benchmark" in item.keywords and not asked:
            item.add_marker(not_asked)


@pytest.fixture(scope="session")
def tiny_run_inputs(tmp_path_factory):
    """A preprocessed synthetic corpus and a tiny Qwen2 matching its tokenizer: (data, model)."""
    from megatron_redi.data import synthetic
    from megatron_redi.data.preprocess import Options, preprocess
    from megatron_redi.fixtures import make_tiny_hf_checkpoint, make_tiny_tokenizer

    root = tmp_path_factory.mktemp("run_inputs")
    synthetic.write_corpus(str(root / "traces.jsonl"), rows=240, digits=3, seed=0)
    make_tiny_tokenizer(str(root / "tokenizer"), 512, texts=synthetic.tokenizer_corpus(3, samples=100))
    preprocess([str(root / "traces.jsonl")], str(root / "data"), Options(tokenizer=str(root / "tokenizer")),
               progress=False)
    model = make_tiny_hf_checkpoint(str(root / "model"), vocab_size=512, hidden_size=32, intermediate_size=64,
                                    num_layers=2, num_heads=4, num_kv_heads=2)
    return str(root / "data"), model


@pytest.fixture(scope="session")
def tiny_run(tiny_run_inputs, tmp_path_factory):
    """A 3-step training run of the tiny model with a checkpoint after each step (the two older ones
    kept as weights only), as a researcher's run directory."""
    import subprocess
    import sys

    data, model = tiny_run_inputs
    out = tmp_path_factory.mktemp("tiny_run") / "run"
    subprocess.run([sys.executable, "-m", "megatron_redi.train", "--model.path", model, "--data.path", data,
                    "--model.dtype", "fp32", "--data.global_batch", "8", "--train.max_steps", "3",
                    "--train.output_dir", str(out), "--train.progress", "false", "--checkpoint.every", "1",
                    "--checkpoint.keep", "1"], check=True, capture_output=True)
    return out
