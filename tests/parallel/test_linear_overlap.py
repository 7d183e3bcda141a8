"""The column-parallel GEMM of parallel/linear.py on 2 gloo ranks: the same values and gradients as
the mapping + plain linear it replaces, and its backward collective launched before the
weight-gradient GEMM and waited for after it."""

import torch
import torch.distributed as dist
import torch.nn.functional as F
from multirank import run_ranks

from megatron_redi.parallel import linear as L
from megatron_redi.parallel import mappings as M


class _Handle:
    def __init__(self, work, on_wait):
        self.work, self.on_wait = work, on_wait

    def wait(self):
        self.on_wait()
        return self.work.wait()


def _record(events, name, fn):
    def wrapped(*args, **kwargs):
        events.append(f"{name} launched")
        work = fn(*args, **kwargs)
        return _Handle(work, lambda: events.append(f"{name} waited")) if kwargs.get("async_op") else work
    return wrapped


def _check_overlap():
    group, rank = dist.group.WORLD, dist.get_rank()
    events = []
    L.raw_all_reduce = _record(events, "all_reduce", L.raw_all_reduce)
    L.raw_reduce_scatter = _record(events, "reduce_scatter", L.raw_reduce_scatter)
    weight_grad = L.weight_grad
    L.weight_grad = lambda *a: (events.append("wgrad"), weight_grad(*a))[1]
    g = torch.Generator().manual_seed(rank)
    w = torch.randn(5, 8, generator=g, dtype=torch.float64)  # this rank's output rows
    b = torch.randn(5, generator=g, dtype=torch.float64)
    for sp in (False, True):
        x = torch.randn(6 if sp else 12, 8, generator=g, dtype=torch.float64)
        up = torch.randn(12, 5, generator=g, dtype=torch.float64)
        outs = []
        for fused in (True, False):
            xi, wi, bi = (t.clone().requires_grad_() for t in (x, w, b))
            if fused:
                y = L.linear(xi, wi, bi, group, sp)
            else:
                y = F.linear((M.gather_tokens if sp else M.copy_to_tp)(xi, group), wi, bi)
            y.backward(up)
            outs.append([y.detach(), xi.grad, wi.grad, bi.grad])
        for got, want in zip(*outs):
            torch.testing.assert_close(got, want)
        collective = "reduce_scatter" if sp else "all_reduce"
        fused_events = [e for e in events if e.startswith(collective) or e == "wgrad"][:3]
        assert fused_events == [f"{collective} launched", "wgrad", f"{collective} waited"], events
        events.clear()


def test_column_parallel_backward_overlaps_its_collective_with_the_weight_gradient():
    run_ranks(2, _check_overlap)
