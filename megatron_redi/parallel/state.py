"""Process groups, held in one validated object that is passed explicitly.

Layout: ``world = tp * cp * dp``, ``rank = tp_rank + tp * (cp_rank + cp * dp_rank)``. Tensor-
parallel groups are blocks of consecutive ranks (they share a node, where NVLink is), context-
parallel groups stride over them, data-parallel groups stride over both:

    world 4, tp 2:         tp {0,1} {2,3}                  dp {0,2} {1,3}
    world 8, tp 2, cp 2:   tp {0,1} {2,3} {4,5} {6,7}      cp {0,2} {1,3} {4,6} {5,7}
                           dp {0,4} {1,5} {2,6} {3,7}      dp x cp {0,2,4,6} {1,3,5,7}

The ranks of a context-parallel group share one data-parallel share of the batch and split each
micro-batch's tokens (context.py); the ranks of a ``dp x cp`` group hold the same parameters, so
gradients are summed, and ZeRO-1's optimizer state sliced, over it.

Nothing here lives in a module global: every layer receives the ``ParallelState`` it works in.
"""

from __future__ import annotations

import datetime
import functools
import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from ..settings import ConfigError
from .layout import divide

SHARED_GPU_ENV = "MEGATRON_REDI_SHARED_GPU"


@dataclass(eq=False)
class ParallelState:
    world_size: int = 1
    rank: int = 0
    tp_size: int = 1
    tp_rank: int = 0
    dp_size: int = 1
    dp_rank: int = 0
    cp_size: int = 1
    cp_rank: int = 0
    tp_group: dist.ProcessGroup | None = None  # None when tp_size == 1
    dp_group: dist.ProcessGroup | None = None  # None when dp_size == 1
    cp_group: dist.ProcessGroup | None = None  # None when cp_size == 1
    dp_cp_group: dist.ProcessGroup | None = None  # the parameters' replicas; None when dp_size * cp_size == 1
    # Shard activations along tokens between the TP regions (LayerNorm, residual, dropout-free
    # elementwise work), Megatron-style; only meaningful with tp_size > 1.
    sequence_parallel: bool = False
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    # sub-groups of consecutive TP ranks, keyed by their size (see tp_subgroup)
    _subgroups: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if self.tp_size * self.cp_size * self.dp_size != self.world_size:
            raise ValueError(f"tp_size ({self.tp_size}) x cp_size ({self.cp_size}) x dp_size ({self.dp_size}) != "
                             f"world_size ({self.world_size})")
        if not (0 <= self.tp_rank < self.tp_size and 0 <= self.dp_rank < self.dp_size
                and 0 <= self.cp_rank < self.cp_size):
            raise ValueError(f"ranks out of range: {self}")
        if self.dp_cp_group is None and self.cp_size == 1:
            self.dp_cp_group = self.dp_group
        if self.sequence_parallel and self.tp_size == 1:
            self.sequence_parallel = False  # nothing to shard over

    @property
    def dp_cp_size(self) -> int:
        """How many ranks hold the same parameter shard: gradients are summed over them."""
        return self.dp_size * self.cp_size

    @property
    def dp_cp_rank(self) -> int:
        return self.cp_rank + self.cp_size * self.dp_rank

    def tp_subgroup(self, size: int) -> dist.ProcessGroup | None:
        """The group of ``size`` consecutive TP ranks that this rank belongs to.

        Used for parameters replicated on part of a TP group (KV heads when tp_size exceeds
        num_kv_heads). Creating groups is collective over the whole world, so every rank creates
        every sub-group in the same order, once, the first time a size is asked for.
        """
        if size == 1:
            return None
        if size == self.tp_size:
            return self.tp_group
        if size not in self._subgroups:
            divide(self.tp_size, size, "tp_size")
            mine = None
            for tp_start in range(0, self.world_size, self.tp_size):
                for start in range(tp_start, tp_start + self.tp_size, size):
                    ranks = list(range(start, start + size))
                    group = dist.new_group(ranks)
                    if self.rank in ranks:
                        mine = group
            self._subgroups[size] = mine
        return self._subgroups[size]


def shutdown() -> None:
    """Leave the process group, on every exit path of a run (torchrun's ranks exit one by one: a
    rank whose peers have gone while its group still lives can abort at exit)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def leaves_the_process_group(main):
    """Decorate a command's ``main`` that may join a process group: it calls ``shutdown`` on
    every exit path, returns and errors alike."""

    @functools.wraps(main)
    def entry(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        finally:
            shutdown()

    return entry


def initialize(tensor_parallel_size: int = 1, sequence_parallel: bool = False,
               backend: str | None = None, timeout_minutes: float = 60.0,
               context_parallel_size: int = 1) -> ParallelState:
    """Build the TP, CP and DP groups from the torchrun environment.

    Without torchrun (no ``WORLD_SIZE``) and without an initialised process group this returns a
    single-process state. The backend is NCCL when CUDA is available, one GPU per rank, gloo on CPU
    otherwise. With MEGATRON_REDI_SHARED_GPU=1 the ranks share the GPUs round robin over gloo (NCCL
    refuses two ranks on one device): the CUDA code of a multi-rank run, on a one-GPU machine.
    ``timeout_minutes``: how long a collective may wait for its peers before the run ends (NCCL's
    watchdog then tears the process down rather than leaving the job hung on a dead rank); it must
    exceed the longest stretch one rank works while the others wait (an HF export, an evaluation's
    slowest share).
    """
    env_world = int(os.environ.get("WORLD_SIZE", "1"))
    if not dist.is_initialized() and env_world == 1:
        if tensor_parallel_size != 1 or context_parallel_size != 1:
            raise ConfigError(f"tensor_parallel_size={tensor_parallel_size} x context_parallel_size="
                              f"{context_parallel_size} needs that many processes; launch with torchrun")
        device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
        return ParallelState(device=device)

    shared = os.environ.get(SHARED_GPU_ENV) == "1" and torch.cuda.is_available()
    if dist.is_initialized():
        backend = dist.get_backend()
    elif backend is None:
        backend = "nccl" if torch.cuda.is_available() and not shared else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if backend == "nccl":
        device = torch.device("cuda", local_rank)
    elif shared:
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
    else:
        device = torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        # a failed or timed-out NCCL collective ends the process instead of hanging the job
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    world, rank = dist.get_world_size(), dist.get_rank()
    tp, cp = tensor_parallel_size, context_parallel_size
    if tp < 1 or cp < 1 or world % (tp * cp):
        raise ConfigError(f"tensor_parallel_size={tp} x context_parallel_size={cp} does not divide the world "
                          f"size {world}")
    dp = world // (tp * cp)
    tp_rank, cp_rank, dp_rank = rank % tp, rank // tp % cp, rank // (tp * cp)

    # new_group is collective: every rank creates every group, in the same order.
    def mine(rank_lists, wanted):
        found = None
        for ranks in rank_lists:
            group = dist.new_group(ranks) if wanted else None
            if rank in ranks:
                found = group
        return found

    block = tp * cp
    tp_group = mine([list(range(s, s + tp)) for s in range(0, world, tp)], tp > 1)
    cp_group = mine([list(range(b + t, b + block, tp)) for b in range(0, world, block) for t in range(tp)], cp > 1)
    dp_group = mine([list(range(o, world, block)) for o in range(block)], dp > 1)
    dp_cp_group = (mine([list(range(t, world, tp)) for t in range(tp)], dp * cp > 1) if cp > 1 else dp_group)
    return ParallelState(world_size=world, rank=rank, tp_size=tp, tp_rank=tp_rank, dp_size=dp, dp_rank=dp_rank,
                         cp_size=cp, cp_rank=cp_rank, tp_group=tp_group, dp_group=dp_group, cp_group=cp_group,
                         dp_cp_group=dp_cp_group, sequence_parallel=sequence_parallel, device=device)
