"""One switch, MEGATRON_REDI_TRITON=0, takes every Triton kernel out of the choice: the decoder's
ops, AdamW and the log-prob head's alike."""

import pytest
import torch

from megatron_redi.ops import backends
from megatron_redi.ops.logprob_kernels import KERNELS

CUDA = torch.device("cuda")  # the choice is made without touching the device: testable on CPU


def test_switch_off_turns_every_triton_kernel_off(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("MEGATRON_REDI_TRITON", "0")
    assert not backends.triton_usable(torch.zeros(1))
    assert KERNELS.for_device(CUDA).name in ("pytorch", "cuda-extension")


@pytest.mark.skipif(not backends.TRITON_AVAILABLE, reason="Triton is not installed (CI installs it)")
def test_switch_on_uses_triton(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.delenv("MEGATRON_REDI_TRITON", raising=False)
    assert backends.triton_usable(torch.zeros(1))
    if backends.cuda_extension() is None:
        assert KERNELS.for_device(CUDA).name == "triton"
    assert KERNELS.for_device(torch.device("cpu")).name == "pytorch"  # CPU runs the references
