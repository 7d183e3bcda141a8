"""Tensor, sequence and data parallelism: groups, the TP layout, autograd collectives, sharded layers."""

from .layers import (ColumnParallelLinear, RowParallelLinear, VocabParallelEmbedding,
                     mark_replicated, replicated_regions, sync_replicated_grads)
from .layout import LayoutError, TPLayout, divide
from .state import ParallelState, initialize, leaves_the_process_group, shutdown

__all__ = ["ColumnParallelLinear", "LayoutError", "ParallelState", "RowParallelLinear", "TPLayout",
           "VocabParallelEmbedding", "divide", "initialize", "leaves_the_process_group", "mark_replicated",
           "replicated_regions", "shutdown", "sync_replicated_grads"]
