"""Run a function on N gloo ranks in fresh processes, as torchrun would, and surface failures.

Rank functions must be module-level (they are pickled by name into spawned processes); an
exception on any rank fails the calling test with that rank's traceback.
"""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank, world_size, port, fn, args):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        fn(*args)
    finally:
        dist.destroy_process_group()


def run_ranks(world_size: int, fn, *args) -> None:
    mp.start_processes(_entry, args=(world_size, _free_port(), fn, args), nprocs=world_size,
                       start_method="spawn")
