"""The linear layers' GEMMs: weight gradients straight into the trainer's fp32 ``main_grad``, and
the column-parallel input gradient's communication overlapped with the weight-gradient GEMM.

The trainer keeps an fp32 gradient for every parameter (``p.main_grad``, training/optimizer.py).
Through plain autograd the weight gradient of a bf16 linear is a bf16 tensor that a hook then adds
into main_grad: one more tensor, one more pass and one more rounding per weight and micro-batch.
Here the weight-gradient GEMM accumulates into main_grad itself, with an fp32 output and beta = 1
(csrc/'s ``wgrad_accumulate`` on CUDA; Megatron calls this gradient-accumulation fusion), and the
parameter receives an uninitialised placeholder gradient so that its post-accumulate hook, which
drives the data-parallel buckets, still fires; ``grad_in_main_grad`` tells the hook not to add it.
Without a main_grad (no trainer: tests, inference) it is exactly ``F.linear``. The embedding does
the same with its rows: ``embedding`` adds each token's gradient into main_grad's row in fp32, in
place of a dense bf16 gradient of the whole table (0.47 GB for Qwen2's 151,936 x 1536: zeroed,
written, then added into main_grad, three passes over it) and its rounding.

Column-parallel layers pass their TP group. Their input arrives replicated over TP (or, under
sequence parallelism, sharded by tokens and all-gathered here), so the input gradient, a partial
sum on each rank, must be all-reduced (reduce-scattered under SP). The backward launches that
collective asynchronously right after the input-gradient GEMM and computes the weight gradient
while it runs (Megatron's asynchronous tensor-parallel all-reduce); on GPUs set
CUDA_DEVICE_MAX_CONNECTIONS=1 so that the collective's kernel is queued ahead of the GEMM.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..parallel.mappings import all_gather_tokens, reduce_scatter_into
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
    def forward(ctx, x, weight, bias, group, sequence_parallel):
        if sequence_parallel:
            x = all_gather_tokens(x, group)  # [t/tp, in] -> [t, in]
        ctx.save_for_backward(x, weight)
        ctx.has_bias, ctx.group, ctx.sequence_parallel = bias is not None, group, sequence_parallel
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, dy):
        x, weight = ctx.saved_tensors
        dx = pending = None
        if ctx.needs_input_grad[0]:
            dx = dy @ weight  # this rank's partial sum when a group is given
            if ctx.sequence_parallel:
                partial, dx = dx, dx.new_empty((dx.shape[0] // dist.get_world_size(ctx.group), *dx.shape[1:]))
                pending = reduce_scatter_into(dx, partial, group=ctx.group, async_op=True)
            elif ctx.group is not None:
                pending = dist.all_reduce(dx, group=ctx.group, async_op=True)
        dw = weight_grad(weight, dy, x) if ctx.needs_input_grad[1] else None  # overlaps the collective
        db = dy.reshape(-1, dy.shape[-1]).sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        if pending is not None:
            pending.wait()
        return dx, dw, db, None, None


class _Embedding(torch.autograd.Function):
    @staticmethod
    def forward(ctx, ids, weight):
        ctx.save_for_backward(ids)
        ctx.weight = weight
        return F.embedding(ids, weight)

    @staticmethod
    def backward(ctx, dy):
        (ids,) = ctx.saved_tensors
        weight = ctx.weight
        weight.main_grad.index_add_(0, ids.reshape(-1), dy.reshape(-1, dy.shape[-1]).float())
        weight.grad_in_main_grad = True
        return None, torch.empty_like(weight)


def embedding(ids: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``weight[ids]``; under the trainer its gradient goes into ``weight.main_grad``, row by row."""
    if getattr(weight, "main_grad", None) is None or not torch.is_grad_enabled():
        return F.embedding(ids, weight)
    return _Embedding.apply(ids, weight)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, group=None,
           sequence_parallel: bool = False) -> torch.Tensor:
    """``x W^T + b``. With ``group`` (a TP group of more than one rank) it is a column-parallel
    layer's GEMM with its input mapping: the input replicated (all-gathered from token shards when
    ``sequence_parallel``) and its gradient summed over the group."""
    if group is not None and dist.get_world_size(group) == 1:
        group = None
    return _Linear.apply(x, weight, bias, group, sequence_parallel and group is not None)
