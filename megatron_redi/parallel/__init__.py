"""Tensor, sequence and data parallelism: groups, autograd collectives, sharded layers."""

from .layers import (ColumnParallelLinear, RowParallelLinear, VocabParallelEmbedding,
                     mark_replicated, sync_replicated_grads)
from .state import ParallelState, divide, initialize

__all__ = ["ColumnParallelLinear", "ParallelState", "RowParallelLinear", "VocabParallelEmbedding",
           "divide", "initialize", "mark_replicated", "sync_replicated_grads"]
