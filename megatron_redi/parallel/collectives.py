"""Every collective of the package, each over an explicit group, with its tensors on the group's
device.

NCCL takes only tensors on the rank's own GPU, and a CPU tensor that gloo accepted on every test
machine fails there, on the first multi-GPU run. Every group of a run shares one device,
``ParallelState.device`` (the rank's GPU under NCCL, the CPU under gloo, the one GPU when several
ranks share it over gloo), so the helpers that make tensors make them there, and the helpers that
take tensors check them when MEGATRON_REDI_CHECK_COLLECTIVES=1 (the test suite sets it): a tensor
elsewhere stops the run with the caller named. A group of None is a group of one rank: nothing to do.

    all_reduce(parallel, t, group, op, async_op)   in place: "sum", "min" or "max"
    all_gather(parallel, out, t, group)            the group's ``t`` concatenated along dim 0 into ``out``
    broadcast(parallel, t, src, group)             ``src``: a global rank
    all_gather_objects(parallel, obj, group)       picklable objects, one per rank of the group, in rank order
    all_ranks(parallel, flag)                      whether a flag holds on every rank of the world
    any_rank(parallel, flag)                       whether it holds on any (every_rank: the old name)
    barrier(parallel)                              the whole world, on the rank's GPU under NCCL

The autograd mappings, the linear layers and the head, whose tensors are the model's own, call the
operations underneath (``raw_all_reduce``, ``raw_all_gather``, ``raw_reduce_scatter``: a group of
two or more ranks, no check). When ranks share a GPU over gloo (MEGATRON_REDI_SHARED_GPU=1, see
state.py), those operations take CUDA tensors through host memory: gloo moves CUDA tensors itself
for only some collectives, differently from one torch version to the next.
"""

from __future__ import annotations

import os
import traceback

import torch
import torch.distributed as dist

CHECK_ENV = "MEGATRON_REDI_CHECK_COLLECTIVES"
OPS = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}
# torch 2.13 renamed the tensor-in/tensor-out collectives; 2.11 (the GPU machine) has only the old names.
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter_single = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


class CollectiveDeviceError(RuntimeError):
    """A collective was handed a tensor that is not on its group's device."""


class _Completed:
    """The handle of a collective that has already run (one taken through host memory)."""

    def wait(self) -> bool:
        return True


def _through_host(tensor: torch.Tensor, group) -> bool:
    return tensor.device.type != "cpu" and dist.get_backend(group) == "gloo"


def _run(collective, out: torch.Tensor, inp: torch.Tensor | None, group, async_op: bool = False, **kwargs):
    """``collective(out[, inp], group=group, ...)``, through host copies where ``_through_host``
    says so (synchronously then: the handle returned is already complete)."""
    if not _through_host(out, group):
        tensors = (out,) if inp is None else (out, inp)
        return collective(*tensors, group=group, async_op=async_op, **kwargs)
    host = out.to("cpu", copy=True)
    tensors = (host,) if inp is None else (host, inp.to("cpu", copy=True))
    collective(*tensors, group=group, **kwargs)
    out.copy_(host)
    return _Completed() if async_op else None


def raw_all_reduce(tensor: torch.Tensor, group, op: str = "sum", async_op: bool = False):
    return _run(dist.all_reduce, tensor, None, group, async_op, op=OPS[op])


def raw_all_gather(out: torch.Tensor, tensor: torch.Tensor, group, async_op: bool = False):
    return _run(_all_gather_single, out, tensor, group, async_op)


def raw_reduce_scatter(out: torch.Tensor, tensor: torch.Tensor, group, async_op: bool = False):
    return _run(_reduce_scatter_single, out, tensor, group, async_op)


def check_device(parallel, what: str, *tensors: torch.Tensor) -> None:
    """With the check on, every tensor must be on ``parallel.device``; else the caller is named."""
    if os.environ.get(CHECK_ENV) != "1":
        return
    for t in tensors:
        if t.device != parallel.device:
            caller = next((f"{f.filename}:{f.lineno} in {f.name}" for f in reversed(traceback.extract_stack())
                           if f.filename != __file__), "?")
            raise CollectiveDeviceError(f"{what} from {caller}: a tensor on {t.device}, but the process group's "
                                        f"device is {parallel.device} (NCCL would refuse it)")


def group_size(group) -> int:
    return 1 if group is None else dist.get_world_size(group)


def group_rank(group) -> int:
    return 0 if group is None else dist.get_rank(group)


def all_reduce(parallel, tensor: torch.Tensor, group, op: str = "sum", async_op: bool = False):
    check_device(parallel, "all_reduce", tensor)
    if group_size(group) == 1:
        return None
    return raw_all_reduce(tensor, group, op, async_op)


def all_gather(parallel, out: torch.Tensor, tensor: torch.Tensor, group) -> torch.Tensor:
    check_device(parallel, "all_gather", out, tensor)
    if group_size(group) == 1:
        out.copy_(tensor)
    else:
        raw_all_gather(out, tensor.contiguous(), group)
    return out


def broadcast(parallel, tensor: torch.Tensor, src: int, group) -> torch.Tensor:
    check_device(parallel, "broadcast", tensor)
    if group_size(group) > 1:
        _run(dist.broadcast, tensor, None, group, src=src)
    return tensor


def all_gather_objects(parallel, obj, group) -> list:
    """Under NCCL the objects travel through the current GPU, which initialize() set to the rank's."""
    if group_size(group) == 1:
        return [obj]
    gathered = [None] * group_size(group)
    dist.all_gather_object(gathered, obj, group=group)
    return gathered


def _agreed(parallel, flag: bool, op: str) -> bool:
    """One all-reduce of a flag over the whole world, so that every rank takes the same branch after it."""
    if parallel.world_size == 1:
        return flag
    t = torch.tensor([int(flag)], device=parallel.device)
    raw_all_reduce(t, dist.group.WORLD, op)
    return bool(t.item())


def all_ranks(parallel, flag: bool) -> bool:
    """Whether ``flag`` holds on every rank of the world."""
    return _agreed(parallel, flag, "min")


def any_rank(parallel, flag: bool) -> bool:
    """Whether ``flag`` holds on any rank of the world."""
    return _agreed(parallel, flag, "max")


def every_rank(parallel, flag: bool, any_rank: bool = False) -> bool:
    """The former name of ``all_ranks`` (``any_rank=True``: of ``any_rank``), kept working."""
    return _agreed(parallel, flag, "max" if any_rank else "min")


def barrier(parallel) -> None:
    if parallel.world_size == 1:
        return
    if parallel.device.type == "cuda" and dist.get_backend() == "nccl":
        dist.barrier(device_ids=[parallel.device.index])  # else NCCL guesses the GPU from the rank
    else:
        dist.barrier()
