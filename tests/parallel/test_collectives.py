"""The collectives' helpers: tensors on the group's device (checked, the caller named), a group of
one rank a no-op, and every helper on 2 gloo ranks."""

import os

import pytest
import torch

from megatron_redi.parallel import ParallelState, collectives
from megatron_redi.parallel.collectives import CHECK_ENV, CollectiveDeviceError
from multirank import run_ranks


def test_the_check_is_on_in_the_test_suite():
    assert os.environ.get(CHECK_ENV) == "1"


def test_a_tensor_off_the_group_s_device_names_the_caller():
    cpu = ParallelState()
    elsewhere = torch.empty(2, device="meta")  # any device that is not the group's, as a CPU tensor under NCCL
    with pytest.raises(CollectiveDeviceError, match=r"all_reduce from .*test_collectives.py:\d+ in test_a_tensor.*"
                                                    r"on meta, but the process group's device is cpu"):
        collectives.all_reduce(cpu, elsewhere, None)
    with pytest.raises(CollectiveDeviceError, match="broadcast"):
        collectives.broadcast(cpu, elsewhere, 0, None)


def test_the_check_is_off_unless_asked(monkeypatch):
    monkeypatch.delenv(CHECK_ENV)
    collectives.all_reduce(ParallelState(), torch.empty(2, device="meta"), None)  # a group of one: nothing to do


def test_a_group_of_one_rank_changes_nothing():
    p, t = ParallelState(), torch.arange(3.0)
    assert collectives.all_reduce(p, t, None) is None and t.tolist() == [0, 1, 2]
    out = torch.empty(3)
    assert collectives.all_gather(p, out, t, None).tolist() == [0, 1, 2]
    assert collectives.all_gather_objects(p, {"a": 1}, None) == [{"a": 1}]
    assert collectives.all_ranks(p, True) and not collectives.any_rank(p, False)
    collectives.barrier(p)


def _helpers_on_two_ranks(mode="cpu"):
    """Every helper and raw operation; ``mode``: "cpu", "through_host" (CPU tensors taken through
    host copies, as CUDA tensors are when ranks share a GPU over gloo) or "shared_gpu" (2 ranks on
    one CUDA device)."""
    from megatron_redi.parallel import initialize
    from megatron_redi.parallel.mappings import gather_tokens
    from megatron_redi.parallel.state import SHARED_GPU_ENV

    staged = []
    if mode == "through_host":
        collectives._through_host = lambda tensor, group: staged.append(tensor.shape) or True
    if mode == "shared_gpu":
        os.environ[SHARED_GPU_ENV] = "1"
    p = initialize(tensor_parallel_size=1)  # DP=2: the world is the DP group
    d = p.device
    assert d == torch.device("cuda", 0) if mode == "shared_gpu" else d == torch.device("cpu")

    def tensor(*values):
        return torch.tensor(values, dtype=torch.float32, device=d)

    t = tensor(p.rank + 1)
    collectives.all_reduce(p, t, p.dp_group)
    assert t.item() == 3.0
    m = tensor(p.rank)
    collectives.all_reduce(p, m, p.dp_group, op="max")
    assert m.item() == 1.0
    out = torch.empty(2, device=d)
    assert collectives.all_gather(p, out, tensor(p.rank), p.dp_group).tolist() == [0.0, 1.0]
    b = tensor(p.rank + 10)
    assert collectives.broadcast(p, b, 1, p.dp_group).item() == 11.0
    assert collectives.all_gather_objects(p, {"rank": p.rank}, p.dp_group) == [{"rank": 0}, {"rank": 1}]
    assert collectives.any_rank(p, p.rank == 0) and not collectives.all_ranks(p, p.rank == 0)
    # the former name, kept working
    assert collectives.every_rank(p, p.rank == 0, any_rank=True) and not collectives.every_rank(p, p.rank == 0)
    collectives.barrier(p)
    # the raw operations, as the linear layers call them: asynchronous, waited for later
    part = torch.empty(1, device=d)
    handle = collectives.raw_reduce_scatter(part, tensor(1, 2) * (p.rank + 1), p.dp_group, async_op=True)
    handle.wait()
    assert part.item() == [3.0, 6.0][p.rank]
    handle = collectives.raw_all_reduce(s := tensor(p.rank, 1), p.dp_group, async_op=True)
    handle.wait()
    assert s.tolist() == [1.0, 2.0]
    # an autograd mapping: all-gather forward, reduce-scatter backward
    x = tensor(p.rank + 1).requires_grad_()
    y = gather_tokens(x, p.dp_group)
    assert y.tolist() == [1.0, 2.0]
    (y * tensor(10, 20)).sum().backward()
    assert x.grad.item() == [20.0, 40.0][p.rank]
    if mode == "through_host":
        assert len(staged) >= 8, staged  # every operation above went through host memory
    try:
        collectives.all_reduce(p, torch.empty(1, device="meta"), p.dp_group)
    except CollectiveDeviceError as e:
        assert "_helpers_on_two_ranks" in str(e)
    else:
        raise AssertionError("a tensor off the group's device went through")


def test_every_helper_on_two_gloo_ranks():
    run_ranks(2, _helpers_on_two_ranks)


def test_every_helper_through_host_memory_on_two_gloo_ranks():
    """The path CUDA tensors take when ranks share a GPU, exercised with CPU tensors: the results
    come back into the caller's tensors, and asynchronous calls return a handle to wait on."""
    run_ranks(2, _helpers_on_two_ranks, "through_host")


@pytest.mark.cuda
def test_every_helper_on_two_ranks_sharing_one_gpu():
    run_ranks(2, _helpers_on_two_ranks, "shared_gpu")


def test_the_process_group_gets_the_timeout_and_fails_fast(monkeypatch):
    """initialize() hands its timeout to the process group and asks NCCL to end a process whose
    collective failed or timed out, rather than leave the job hung (checked without starting one)."""
    import datetime

    from megatron_redi.parallel import state

    seen = {}

    class Started(Exception):
        pass

    def init_process_group(backend, timeout):
        seen.update(backend=backend, timeout=timeout, fail_fast=os.environ.get("TORCH_NCCL_ASYNC_ERROR_HANDLING"))
        raise Started

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("TORCH_NCCL_ASYNC_ERROR_HANDLING", raising=False)
    monkeypatch.setattr(state.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(state.dist, "init_process_group", init_process_group)
    with pytest.raises(Started):
        state.initialize(timeout_minutes=90)
    assert seen == {"backend": "gloo", "timeout": datetime.timedelta(minutes=90), "fail_fast": "1"}


def test_the_trainer_s_timeout_is_a_config_key():
    from megatron_redi.training import TrainConfigError, load_config

    base = ["--model.path", "m", "--data.path", "d"]
    assert load_config(None, base).parallel.timeout_minutes == 60.0
    with pytest.raises(TrainConfigError, match="parallel.timeout_minutes must be a positive number"):
        load_config(None, base + ["--parallel.timeout_minutes", "0"])
