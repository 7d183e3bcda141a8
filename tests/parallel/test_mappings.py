"""Each autograd collective against its definition: forward value and backward gradient."""

import torch
import torch.distributed as dist
from multirank import run_ranks

from megatron_redi.parallel import mappings as M


def _check_mappings():
    group, rank, world = dist.group.WORLD, dist.get_rank(), dist.get_world_size()
    # every rank's tensor is distinct and known to all: full[r] is rank r's input
    full = torch.arange(world * 4 * 6, dtype=torch.float64).view(world, 4, 6) + 1
    x = full[rank].clone().requires_grad_()
    g = torch.randn(4, 6, generator=torch.Generator().manual_seed(rank), dtype=torch.float64)
    all_g = [torch.randn(4, 6, generator=torch.Generator().manual_seed(r), dtype=torch.float64)
             for r in range(world)]

    def run(fn, grad):
        x.grad = None
        y = fn(x.clone() if fn is M.reduce_from_tp else x, group)  # it reduces in place
        y.backward(grad.clone())  # backward collectives may work in place on their gradient
        return y.detach(), x.grad

    y, dx = run(M.copy_to_tp, g)
    assert torch.equal(y, full[rank]) and torch.allclose(dx, sum(all_g))
    y, dx = run(M.reduce_from_tp, g)
    assert torch.allclose(y, full.sum(0)) and torch.equal(dx, g)

    y, dx = run(M.split_last_dim, g[:, :3])
    assert torch.equal(y, full[rank][:, rank * 3:(rank + 1) * 3])
    assert torch.equal(dx, torch.cat([ag[:, :3] for ag in all_g], dim=1))
    y, dx = run(M.gather_last_dim, torch.ones(4, 12, dtype=torch.float64))
    assert torch.equal(y, torch.cat(list(full), dim=1)) and torch.equal(dx, torch.ones(4, 6, dtype=torch.float64))

    y, dx = run(M.split_tokens, g[:2])
    assert torch.equal(y, full[rank][rank * 2:(rank + 1) * 2])
    assert torch.equal(dx, torch.cat([ag[:2] for ag in all_g]))
    big = [torch.cat([ag, ag]) for ag in all_g]  # gradient of the gathered [8, 6] output, per rank
    y, dx = run(M.gather_tokens, big[rank])
    assert torch.equal(y, torch.cat(list(full)))
    assert torch.allclose(dx, sum(big)[rank * 4:(rank + 1) * 4])  # reduce-scatter
    y, dx = run(M.reduce_scatter_tokens, g[:2])
    assert torch.allclose(y, full.sum(0)[rank * 2:(rank + 1) * 2])
    assert torch.equal(dx, torch.cat([ag[:2] for ag in all_g]))


def test_mappings_two_ranks():
    run_ranks(2, _check_mappings)


def test_mappings_are_identity_without_group():
    x = torch.randn(4, 6, requires_grad=True)
    for fn in (M.copy_to_tp, M.reduce_from_tp, M.split_last_dim, M.gather_last_dim,
               M.split_tokens, M.gather_tokens, M.reduce_scatter_tokens):
        assert fn(x, None) is x or torch.equal(fn(x, None), x)
