"""Tensor-parallel layers: column- and row-parallel linear, vocab-parallel embedding.

Shapes per TP rank (``tp`` ranks; ``t`` tokens of the micro-batch; SP = sequence parallel):

    ColumnParallelLinear  W [out/tp, in]
      forward  X [t, in] (SP: [t/tp, in], all-gathered over tokens) -> Y [t, out/tp]
      dgrad    dY [t, out/tp] -> dX partial [t, in], all-reduced (SP: reduce-scattered to [t/tp, in])
               asynchronously, while the wgrad GEMM runs
      wgrad    dW = dY^T X  [out/tp, in], no communication

    RowParallelLinear     W [out, in/tp]
      forward  X [t, in/tp] -> Y partial [t, out], all-reduced (SP: reduce-scattered to [t/tp, out])
      dgrad    dY [t, out] (SP: all-gathered from [t/tp, out]) -> dX [t, in/tp]
      wgrad    dW = dY^T X  [out, in/tp], no communication

    VocabParallelEmbedding  W [V/tp, h], rank r owns rows [r V/tp, (r+1) V/tp)
      forward  ids [t] -> rows of owned ids, zeros elsewhere -> summed over TP
               (SP: reduce-scattered to [t/tp, h])

Whether the activations arrive sharded along tokens (SP) is an argument of each forward: the model
decides it per pass (as ``ParallelState.sequence_parallel`` says in training, never in generation).
Parameters that every TP rank holds in full are marked with ``mark_replicated`` so that the
trainer can sum their gradients over the ranks that share them (``sync_replicated_grads``).
"""

from __future__ import annotations

import torch
from torch import nn

from .. import main_grad
from .collectives import group_size, raw_all_reduce
from .linear import embedding, linear
from .mappings import reduce_from_tp, reduce_scatter_tokens
from .state import ParallelState, divide


def _new_param(shape, parallel: ParallelState, dtype, std: float | None) -> nn.Parameter:
    # on the rank's device, unless the model is being built on the meta device (from_pretrained:
    # nothing allocated or initialised before the checkpoint fills it)
    meta = torch.get_default_device().type == "meta"
    data = torch.empty(shape, device="meta" if meta else parallel.device, dtype=dtype)
    if std is None:
        nn.init.ones_(data)
    elif std == 0:
        nn.init.zeros_(data)
    else:
        nn.init.normal_(data, std=std)
    return nn.Parameter(data)


class ColumnParallelLinear(nn.Module):
    """``Y = X W^T (+ b)`` with W split along its output rows; the output stays split."""

    def __init__(self, in_features: int, out_features: int, parallel: ParallelState,
                 bias: bool = False, dtype=torch.float32):
        super().__init__()
        self.parallel = parallel
        self.out_features_per_partition = divide(out_features, parallel.tp_size, "out_features")
        self.weight = _new_param((self.out_features_per_partition, in_features), parallel, dtype, 0.02)
        self.bias = _new_param((self.out_features_per_partition,), parallel, dtype, 0) if bias else None

    def forward(self, x: torch.Tensor, sequence_parallel: bool) -> torch.Tensor:
        # the input mapping (gather_tokens or copy_to_tp) is fused into the GEMM's Function so
        # that its backward collective overlaps the weight-gradient GEMM (linear.py)
        return linear(x, self.weight, self.bias, self.parallel.tp_group, sequence_parallel)


class RowParallelLinear(nn.Module):
    """``Y = X W^T`` with W split along its input columns; X arrives split, Y is reduced."""

    def __init__(self, in_features: int, out_features: int, parallel: ParallelState,
                 dtype=torch.float32):
        super().__init__()
        self.parallel = parallel
        self.in_features_per_partition = divide(in_features, parallel.tp_size, "in_features")
        self.weight = _new_param((out_features, self.in_features_per_partition), parallel, dtype, 0.02)

    def forward(self, x: torch.Tensor, sequence_parallel: bool) -> torch.Tensor:
        return self.reduce_output(linear(x, self.weight), sequence_parallel)

    def reduce_output(self, y: torch.Tensor, sequence_parallel: bool) -> torch.Tensor:
        """Sum the ranks' partial outputs (for callers that fuse their own GEMM with this weight)."""
        group = self.parallel.tp_group
        return reduce_scatter_tokens(y, group) if sequence_parallel else reduce_from_tp(y, group)


class VocabParallelEmbedding(nn.Module):
    """Embedding whose rows (the vocabulary) are split over TP ranks."""

    def __init__(self, num_embeddings: int, embedding_dim: int, parallel: ParallelState,
                 dtype=torch.float32):
        super().__init__()
        self.parallel = parallel
        self.num_embeddings_per_partition = divide(num_embeddings, parallel.tp_size, "vocab_size")
        self.vocab_start = parallel.tp_rank * self.num_embeddings_per_partition
        self.weight = _new_param((self.num_embeddings_per_partition, embedding_dim), parallel, dtype, 0.02)

    def forward(self, ids: torch.Tensor, sequence_parallel: bool) -> torch.Tensor:
        if self.parallel.tp_size == 1:
            return embedding(ids, self.weight)
        local = ids - self.vocab_start
        outside = (local < 0) | (local >= self.num_embeddings_per_partition)
        rows = embedding(local.masked_fill(outside, 0), self.weight)
        rows = rows.masked_fill(outside.unsqueeze(-1), 0.0)
        group = self.parallel.tp_group
        return reduce_scatter_tokens(rows, group) if sequence_parallel else reduce_from_tp(rows, group)


# ---- parameters replicated over (part of) a TP group ------------------------------------------

def mark_replicated(module: nn.Module, param_name: str, group, rows: slice | None = None) -> None:
    """Declare that ``module.<param_name>[rows]`` (all of it when rows is None) is held identically
    by every rank of ``group``, each rank computing only its share of the gradient.

    The mark lives on the module, not the parameter: ``Module.to_empty`` (loading from the meta
    device) replaces parameter objects and would drop attributes set on them.
    """
    if group is None:
        return
    if "replicated_params" not in module.__dict__:
        module.replicated_params = []
    module.replicated_params.append((param_name, rows if rows is not None else slice(None), group))


def _marks(model: nn.Module):
    """(module name, module, parameter name, rows, group) of every replicated region."""
    for mod_name, module in model.named_modules():
        for param_name, rows, group in module.__dict__.get("replicated_params", ()):
            yield mod_name, module, param_name, rows, group


def replicated_regions(model: nn.Module) -> dict[str, list[tuple[slice, int]]]:
    """Parameter name -> [(rows, how many TP ranks hold them)] for every parameter (or part of
    one) replicated over TP ranks: what a gradient or update norm must count once."""
    out = {}
    for mod_name, _, param_name, rows, group in _marks(model):
        full = f"{mod_name}.{param_name}" if mod_name else param_name
        out.setdefault(full, []).append((rows, group_size(group)))
    return out


@torch.no_grad()
def sync_replicated_grads(model: nn.Module) -> None:
    """Sum the gradients of replicated parameters over the ranks that share them, so that the
    copies receive the same update and never drift. Call after backward, before the optimizer.
    Works on the trainer's fp32 gradient (megatron_redi/main_grad.py) when a parameter has one,
    else on ``.grad``."""
    for _, module, param_name, rows, group in _marks(model):
        param = getattr(module, param_name)
        grad = main_grad.of(param)
        grad = param.grad if grad is None else grad
        if grad is None:
            continue
        part = grad[rows]
        buf = part.contiguous()
        raw_all_reduce(buf, group)
        part.copy_(buf)
