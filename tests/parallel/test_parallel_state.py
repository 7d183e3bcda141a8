import pytest
import torch
import torch.distributed as dist
from multirank import run_ranks

from megatron_redi.parallel import ParallelState, divide, initialize


def test_single_process_without_torchrun(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    state = initialize()
    assert (state.world_size, state.tp_size, state.dp_size, state.rank) == (1, 1, 1, 0)
    assert state.tp_group is None and state.dp_group is None
    with pytest.raises(ValueError, match="torchrun"):
        initialize(tensor_parallel_size=2)


def test_validation():
    with pytest.raises(ValueError, match="world_size"):
        ParallelState(world_size=4, tp_size=3, dp_size=1)
    with pytest.raises(ValueError, match="vocab_size .* not divisible by 4"):
        divide(10, 4, "vocab_size")
    assert not ParallelState(sequence_parallel=True).sequence_parallel  # nothing to shard at tp=1


def _members(group) -> list[int]:
    me = torch.tensor([dist.get_rank()])
    out = [torch.zeros(1, dtype=torch.long) for _ in range(dist.get_world_size(group))]
    dist.all_gather(out, me, group=group)
    return [int(t) for t in out]


def _check_tp2_dp2():
    state = initialize(tensor_parallel_size=2)
    rank = dist.get_rank()
    assert (state.world_size, state.tp_size, state.dp_size) == (4, 2, 2)
    assert (state.tp_rank, state.dp_rank) == (rank % 2, rank // 2)
    assert _members(state.tp_group) == [rank - rank % 2, rank - rank % 2 + 1]  # consecutive
    assert _members(state.dp_group) == [rank % 2, rank % 2 + 2]  # strided
    with pytest.raises(ValueError, match="does not divide"):
        initialize(tensor_parallel_size=3)


def test_tp2_dp2_groups_on_four_ranks():
    run_ranks(4, _check_tp2_dp2)
