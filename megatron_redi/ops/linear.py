"""A linear layer whose weight gradient goes straight into the trainer's fp32 ``main_grad``.

The trainer keeps an fp32 gradient for every parameter (``p.main_grad``, training/optimizer.py).
Through plain autograd the weight gradient of a bf16 linear is a bf16 tensor that a hook then adds
into main_grad: one more tensor, one more pass and one more rounding per weight and micro-batch.
Here the weight-gradient GEMM accumulates into main_grad itself, with an fp32 output and beta = 1
(csrc/'s ``wgrad_accumulate`` on CUDA; Megatron calls this gradient-accumulation fusion), and the
parameter receives an uninitialised placeholder gradient so that its post-accumulate hook, which
drives the data-parallel buckets, still fires; ``grad_in_main_grad`` tells the hook not to add it.
Without a main_grad (no trainer: tests, inference) it is exactly ``F.linear``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .logprob_kernels import KERNELS


def weight_grad(weight: torch.Tensor, dy: torch.Tensor, x: torch.Tensor):
    """``dy^T x`` for ``weight`` [out, in] from ``dy`` [..., out] and ``x`` [..., in]: returned, or
    accumulated into ``weight.main_grad`` (then a placeholder is returned)."""
    dy2, x2 = dy.reshape(-1, dy.shape[-1]), x.reshape(-1, x.shape[-1])
    main = getattr(weight, "main_grad", None)
    if main is None:
        return dy2.t() @ x2
    KERNELS.for_device(dy.device).wgrad_accumulate(main, dy2.contiguous(), x2.contiguous())
    weight.grad_in_main_grad = True
    return torch.empty_like(weight)


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, dy):
        x, weight = ctx.saved_tensors
        dx = dy @ weight if ctx.needs_input_grad[0] else None
        dw = weight_grad(weight, dy, x) if ctx.needs_input_grad[1] else None
        db = dy.reshape(-1, dy.shape[-1]).sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return dx, dw, db


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    return _Linear.apply(x, weight, bias)
