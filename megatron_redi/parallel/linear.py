"""The linear layers' autograd Functions: weight gradients into the trainer's fp32 ``main_grad``,
and the column-parallel input gradient's communication overlapped with the weight-gradient GEMM.

Every weight gradient goes through ``ops.wgrad.weight_grad``: accumulated straight into the
parameter's fp32 ``main_grad`` when the trainer keeps one (no bf16 gradient formed, added and
rounded), plain ``dy^T x`` otherwise. The embedding does the same with its rows: ``embedding``
adds each token's gradient into main_grad's row in fp32, in place of a dense bf16 gradient of the
whole table (zeroed, written, then added into main_grad: three passes over V x h values) and its
rounding.

Column-parallel layers pass their TP group. Their input arrives replicated over TP (or, under
sequence parallelism, sharded by tokens and all-gathered here), so the input gradient, a partial
sum on each rank, must be all-reduced (reduce-scattered under SP). The backward launches that
collective asynchronously right after the input-gradient GEMM and computes the weight gradient
while it runs (Megatron's asynchronous tensor-parallel all-reduce); on GPUs set
CUDA_DEVICE_MAX_CONNECTIONS=1 so that the collective's kernel is queued ahead of the GEMM.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import main_grad
from ..ops.wgrad import weight_grad
from .collectives import group_size, raw_all_reduce, raw_reduce_scatter
from .mappings import all_gather_tokens


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
                partial, dx = dx, dx.new_empty((dx.shape[0] // group_size(ctx.group), *dx.shape[1:]))
                pending = raw_reduce_scatter(dx, partial, ctx.group, async_op=True)
            elif ctx.group is not None:
                pending = raw_all_reduce(dx, ctx.group, async_op=True)
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
        main_grad.write(weight, replaces_grad=True).index_add_(0, ids.reshape(-1), dy.reshape(-1, dy.shape[-1]).float())
        return None, torch.empty_like(weight)


def embedding(ids: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``weight[ids]``; under the trainer its gradient goes into ``weight.main_grad``, row by row."""
    if main_grad.of(weight) is None or not torch.is_grad_enabled():
        return F.embedding(ids, weight)
    return _Embedding.apply(ids, weight)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, group=None,
           sequence_parallel: bool = False) -> torch.Tensor:
    """``x W^T + b``. With ``group`` (a TP group of more than one rank) it is a column-parallel
    layer's GEMM with its input mapping: the input replicated (all-gathered from token shards when
    ``sequence_parallel``) and its gradient summed over the group."""
    if group is not None and group_size(group) == 1:
        group = None
    return _Linear.apply(x, weight, bias, group, sequence_parallel and group is not None)
