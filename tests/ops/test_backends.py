"""One rule picks every op's kernels (ops/backends.py ``choose``), read at call time: one switch,
MEGATRON_REDI_TRITON=0, takes every Triton kernel out of the choice, the decoder's ops, AdamW and
the log-prob head's alike."""

import pytest
import torch

from megatron_redi.ops import backends
from megatron_redi.ops.logprob_kernels import KERNELS

CUDA = torch.device("cuda")  # the choice is made without touching the device: testable on CPU


def test_switch_off_turns_every_triton_kernel_off(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("MEGATRON_REDI_TRITON", "0")
    assert backends.choose(torch.device("cpu")) == "pytorch"
    assert KERNELS.for_device(CUDA).name in ("pytorch", "cuda-extension")
    assert KERNELS.for_device(CUDA, prefer="pytorch").name == "pytorch"


@pytest.mark.skipif(not backends.TRITON_AVAILABLE, reason="Triton is not installed (CI installs it)")
def test_switch_on_uses_triton(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.delenv("MEGATRON_REDI_TRITON", raising=False)
    assert backends.choose(torch.device("cpu")) == "triton"  # the interpreter: what the kernel tests use
    if backends.cuda_extension() is None:
        assert KERNELS.for_device(CUDA).name == "triton"
    monkeypatch.delenv("TRITON_INTERPRET")
    assert KERNELS.for_device(torch.device("cpu")).name == "pytorch"  # CPU runs the references
    assert backends.choose(torch.device("cpu"), ("cuda-extension", "pytorch")) == "pytorch"


def test_a_preference_that_is_not_available_is_refused():
    with pytest.raises(RuntimeError, match="not available here"):
        backends.choose(torch.device("cpu"), ("cuda-extension", "pytorch"), prefer="cuda-extension")
    with pytest.raises(RuntimeError, match="not available here"):
        backends.choose(torch.device("cpu"), ("triton", "pytorch"), prefer="cuda-extension")
