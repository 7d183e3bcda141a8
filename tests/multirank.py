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


def gathered(tensor: torch.Tensor, group, n: int) -> list[torch.Tensor]:
    """Every rank's copy of ``tensor`` over ``group`` (n ranks), in rank order."""
    parts = [torch.empty_like(tensor) for _ in range(n)]
    dist.all_gather(parts, tensor.contiguous(), group=group)
    return parts


def merged_grads(model, shards_of) -> dict[str, torch.Tensor]:
    """The model's gradients in HF layout: ``shards_of(grad)`` lists every TP rank's shard, which
    the converter's own surgery merges (refusing replicas that differ)."""
    from megatron_redi.checkpoint import merge_shards, name_table

    params, out = dict(model.named_parameters()), {}
    for entry in name_table(model.cfg):
        for hf_name, tensor in zip(entry.hf, merge_shards(entry, shards_of(params[entry.native].grad), model.cfg)):
            out[hf_name] = tensor
    return out


def assert_grads_close(got: dict, want: dict, tol: float = 1e-5) -> None:
    assert want.keys() == got.keys()
    for name in want:
        scale = max(1.0, want[name].abs().max().item())
        err = (got[name] - want[name]).abs().max().item()
        assert err <= tol * scale, f"{name}: gradient differs by {err} (scale {scale})"
