"""Autograd-aware collectives over a tensor-parallel group, one Function per conjugate pair.
(Context parallelism uses two of them over its own group: ``gather_tokens`` for the keys and
values, ``reduce_from_tp`` for the log-prob head's per-sequence sums.)

Each mapping's backward is its partner's forward:

    copy_to_tp                 forward: identity              backward: all-reduce
    reduce_from_tp             forward: all-reduce            backward: identity
    split_last_dim             forward: keep own chunk (-1)   backward: all-gather along -1
    gather_last_dim            forward: all-gather along -1   backward: keep own chunk (-1)
    split_tokens               forward: keep own chunk (0)    backward: all-gather along 0
    gather_tokens              forward: all-gather along 0    backward: reduce-scatter along 0
    reduce_scatter_tokens      forward: reduce-scatter (0)    backward: all-gather along 0

The token dimension is dim 0 of the packed ``[t, ...]`` layout: sequence parallelism shards it
into ``t / tp`` contiguous rows per rank, in rank order. With ``group=None`` (a TP size of 1)
every mapping is the identity. The all-reduce of ``reduce_from_tp`` works in place on its input,
which in the model is always a fresh GEMM output that nothing else holds.
"""

from __future__ import annotations

import torch

from .collectives import group_rank, raw_all_gather, raw_all_reduce, raw_reduce_scatter
from .collectives import group_size as _size


def _all_reduce(x: torch.Tensor, group) -> torch.Tensor:
    if _size(group) > 1:
        raw_all_reduce(x, group)
    return x


def _all_gather(x: torch.Tensor, group, dim: int) -> torch.Tensor:
    n = _size(group)
    if n == 1:
        return x
    x = x.movedim(dim, 0).contiguous()
    out = x.new_empty((n * x.shape[0], *x.shape[1:]))
    raw_all_gather(out, x, group)
    return out.movedim(0, dim)


def _reduce_scatter(x: torch.Tensor, group, dim: int) -> torch.Tensor:
    n = _size(group)
    if n == 1:
        return x
    x = x.movedim(dim, 0).contiguous()
    if x.shape[0] % n:
        raise ValueError(f"reduce-scatter: dim {dim} of size {x.shape[0]} is not divisible by {n}")
    out = x.new_empty((x.shape[0] // n, *x.shape[1:]))
    raw_reduce_scatter(out, x, group)
    return out.movedim(0, dim)


def _split(x: torch.Tensor, group, dim: int) -> torch.Tensor:
    n = _size(group)
    if n == 1:
        return x
    if x.shape[dim] % n:
        raise ValueError(f"split: dim {dim} of size {x.shape[dim]} is not divisible by {n}")
    return x.chunk(n, dim=dim)[group_rank(group)].contiguous()


def _conjugate(name: str, forward, backward):
    """An autograd collective: ``forward(x, group)`` and its conjugate ``backward(grad, group)``."""

    class Mapping(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, group):
            ctx.group = group
            return forward(x, group)

        @staticmethod
        def backward(ctx, grad):
            return backward(grad.contiguous(), ctx.group), None

    Mapping.__name__ = Mapping.__qualname__ = name

    def apply(x: torch.Tensor, group) -> torch.Tensor:
        return Mapping.apply(x, group)

    apply.__name__ = name
    return apply


def _identity(x, group):
    return x


def _gather_last(x, group):
    return _all_gather(x, group, -1)


def _split_last(x, group):
    return _split(x, group, -1)


def all_gather_tokens(x, group):
    """The plain (not autograd) all-gather of token shards, for Functions that fuse their own."""
    return _all_gather(x, group, 0)


def _split_first(x, group):
    return _split(x, group, 0)


def _reduce_scatter_first(x, group):
    return _reduce_scatter(x, group, 0)


# name                     forward                 backward
copy_to_tp = _conjugate("copy_to_tp", _identity, _all_reduce)
reduce_from_tp = _conjugate("reduce_from_tp", _all_reduce, _identity)
split_last_dim = _conjugate("split_last_dim", _split_last, _gather_last)
gather_last_dim = _conjugate("gather_last_dim", _gather_last, _split_last)
split_tokens = _conjugate("split_tokens", _split_first, all_gather_tokens)
gather_tokens = _conjugate("gather_tokens", all_gather_tokens, _reduce_scatter_first)
reduce_scatter_tokens = _conjugate("reduce_scatter_tokens", _reduce_scatter_first, all_gather_tokens)
