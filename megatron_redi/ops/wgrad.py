"""The weight-gradient GEMM that accumulates into an fp32 buffer: the CUDA extension's cuBLAS GEMM
(beta = 1, fp32 output) or the PyTorch reference.

    wgrad_accumulate(acc [n, k] fp32, dy [t, n], x [t, k])   acc += dy^T x, accumulated in fp32
    weight_grad(weight, dy, x)                                 dy^T x for ``weight``: returned, or
                                                               accumulated into weight.main_grad

The trainer keeps an fp32 gradient for every parameter (megatron_redi/main_grad.py).
Through plain autograd the weight gradient of a bf16 linear is a bf16 tensor that a hook then adds
into main_grad: one more tensor, one more pass and one more rounding per weight and micro-batch.
``weight_grad`` accumulates into main_grad itself (Megatron calls this gradient-accumulation
fusion) and returns an uninitialised placeholder, so that the parameter's post-accumulate hook,
which drives the data-parallel buckets, still fires; the contract's "delivered" mark tells the hook
not to add it. Without a main_grad (no trainer: tests, inference) it returns the plain product.
"""

from __future__ import annotations

import torch

from .. import main_grad
from .backends import choose, cuda_extension


def wgrad_accumulate_reference(acc, dy, x):
    if dy.dtype == torch.float32 or dy.device.type != "cuda":
        acc.addmm_(dy.t().float(), x.float())
    else:  # bf16 GEMM (fp32 inside), rounded once per call before the fp32 sum
        acc.add_(dy.t() @ x)


def wgrad_accumulate(acc, dy, x):
    """The extension's GEMM on CUDA when it is built, else the reference."""
    if choose(dy.device, ("cuda-extension", "pytorch")) == "cuda-extension":
        cuda_extension().wgrad_accumulate(acc, dy, x)
    else:
        wgrad_accumulate_reference(acc, dy, x)


def weight_grad(weight: torch.Tensor, dy: torch.Tensor, x: torch.Tensor):
    """``dy^T x`` for ``weight`` [out, in] from ``dy`` [..., out] and ``x`` [..., in]: returned, or
    accumulated into ``weight.main_grad`` (then a placeholder is returned)."""
    dy2, x2 = dy.reshape(-1, dy.shape[-1]), x.reshape(-1, x.shape[-1])
    if main_grad.of(weight) is None:
        return dy2.t() @ x2
    wgrad_accumulate(main_grad.write(weight, replaces_grad=True), dy2.contiguous(), x2.contiguous())
    return torch.empty_like(weight)
