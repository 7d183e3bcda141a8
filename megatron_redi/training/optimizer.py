"""The optimizer over flat shards: fp32 master weights, AdamW, ZeRO-1; ``MasterParams`` ties it to
the gradient buffer.

Layout. The master weights, the AdamW moments and a flat copy of the parameters in the compute
dtype (bf16 on GPU) follow the gradients' flat layout (training/grad_buffer.py: one buffer per
weight-decay group); every parameter's ``p.data`` becomes a view of the compute-dtype buffer, so
one copy updates the whole model.

Update. AdamW runs over the flat buffers (ops/adamw.py: one Triton kernel on GPU), which also yields
the exact norm of the update (the paper's "gradient step size") without a copy of the weights.
With ZeRO-1 each of the ranks holding the same parameters (DP x CP) updates only its slice of each
buffer (and holds only that slice's moments), then the slices are all-gathered and copied into the
model's parameters. Parameters replicated over TP ranks (parallel.replicated_regions) count once
in the norms.

    MasterParams(model, parallel, zero1, bucket_mb)   the step's gradients (``.grads``, a GradBuffer)
                                                       and this optimizer, built over one layout
"""

from __future__ import annotations

import math

import torch

from ..ops.adamw import adamw_update
from ..parallel import ParallelState, collectives
from .grad_buffer import FlatLayout, GradBuffer, counted_once, flat_layouts, no_weight_decay

__all__ = ["FlatAdamW", "MasterParams", "lr_at", "no_weight_decay"]


class FlatAdamW:
    def __init__(self, layouts: list[FlatLayout], parallel: ParallelState, zero1: bool, device: torch.device,
                 replicated: list[tuple[int, str, slice, int]]):
        self.layouts, self.parallel, self.zero1 = layouts, parallel, zero1
        self.master = [torch.zeros(lay.numel, dtype=torch.float32, device=device) for lay in layouts]
        self.model = []
        for lay, master in zip(layouts, self.master):
            # the parameters become views of one flat buffer in their (common) dtype: one copy per update
            dtypes = {p.dtype for _, p in lay.params}
            if len(dtypes) > 1:
                raise ValueError(f"parameters of one model must share a dtype, got {sorted(map(str, dtypes))}")
            flat = torch.zeros(lay.numel, dtype=dtypes.pop() if dtypes else torch.float32, device=device)
            for name, p in lay.params:
                lay.view(master, name).copy_(p.detach())
                lay.view(flat, name).copy_(p.detach())
                p.data = lay.view(flat, name)
            self.model.append(flat)
        self.slices = [self._my_slice(lay) for lay in layouts]  # ZeRO-1: this rank's part of each buffer
        self.exp_avg = [torch.zeros(s.stop - s.start, dtype=torch.float32, device=device) for s in self.slices]
        self.exp_avg_sq = [torch.zeros_like(m) for m in self.exp_avg]
        self.replicated = replicated
        self.step_count = 0

    def _my_slice(self, lay: FlatLayout) -> slice:
        if not self.zero1:
            return slice(0, lay.numel)
        size = lay.numel // self.parallel.dp_cp_size
        return slice(self.parallel.dp_cp_rank * size, (self.parallel.dp_cp_rank + 1) * size)

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor], lr: float, betas, eps: float, weight_decay: float,
             grad_scale: float = 1.0) -> torch.Tensor:
        """One AdamW step on this rank's slices from ``grad_scale`` x ``grads`` (clipping), then
        the model's parameters updated. Returns this rank's share of the squared norm of the
        update, replicated parameters counted once over the TP ranks that share them."""
        self.step_count += 1
        replicated = [(self.layouts[i].view(self.master[i], name)[rows], share)
                      for i, name, rows, share in self.replicated]
        before = [view.clone() for view, _ in replicated]
        sharded = self.zero1 and self.parallel.dp_cp_size > 1
        sq = torch.zeros((), dtype=torch.float32, device=self.master[0].device)
        for lay, master, flat, grad, sl, m, v in zip(self.layouts, self.master, self.model, grads, self.slices,
                                                     self.exp_avg, self.exp_avg_sq):
            out = None if sharded else flat[sl]  # the bf16 copy, in the same pass
            sq += adamw_update(master[sl], grad[sl], m, v, lr, betas, eps, weight_decay if lay.decay else 0.0,
                               self.step_count, grad_scale, out)
        if sharded:
            for master, sl in zip(self.master, self.slices):
                collectives.all_gather(self.parallel, master, master[sl].clone(), self.parallel.dp_cp_group)
            self.copy_to_model()
        # After ZeRO-1's gather every replica sees the whole replicated update: let one count it.
        if not (self.zero1 and self.parallel.dp_cp_rank > 0):
            sq = counted_once(sq, ((view - old, share) for (view, share), old in zip(replicated, before)))
        return sq

    def update_norm(self, sq: torch.Tensor) -> torch.Tensor:
        """The global norm of the step, from every rank's ``step`` share."""
        if self.zero1:
            collectives.all_reduce(self.parallel, sq, self.parallel.dp_cp_group)
        collectives.all_reduce(self.parallel, sq, self.parallel.tp_group)
        return sq.clamp_min(0).sqrt()

    @torch.no_grad()
    def copy_to_model(self):
        for master, flat in zip(self.master, self.model):
            flat.copy_(master)

    def master_tensors(self) -> dict[str, torch.Tensor]:
        """Native name -> fp32 master weight (views, shaped like the parameters)."""
        return {name: lay.view(master, name) for lay, master in zip(self.layouts, self.master) for name, _ in lay.params}

    def all_finite(self) -> bool:
        # a NaN or an inf shows in the extremes: one pass, without a buffer of flags as large as the weights
        return all(bool(torch.isfinite(torch.stack(torch.aminmax(master))).all()) for master in self.master
                   if master.numel())

    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {}
        for i in range(len(self.layouts)):
            out[f"exp_avg.{i}"], out[f"exp_avg_sq.{i}"] = self.exp_avg[i], self.exp_avg_sq[i]
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], step_count: int):
        for i in range(len(self.layouts)):
            for key, mine in ((f"exp_avg.{i}", self.exp_avg[i]), (f"exp_avg_sq.{i}", self.exp_avg_sq[i])):
                if key not in tensors or tensors[key].shape != mine.shape:
                    raise ValueError(f"optimizer state {key}: expected shape {list(mine.shape)}")
                mine.copy_(tensors[key])
        self.step_count = step_count

    def load_master(self, tensors: dict[str, torch.Tensor]):
        for lay, master in zip(self.layouts, self.master):
            for name, _ in lay.params:
                lay.view(master, name).copy_(tensors[name].reshape(lay.shapes[name]))
        self.copy_to_model()


class MasterParams(FlatAdamW):
    """A model's training state: the optimizer over flat shards and, as ``grads``, its gradient
    buffer (data-parallel reduction included), on one layout. The trainer, the step and the
    checkpoints use it; its gradient methods are the buffer's."""

    def __init__(self, model: torch.nn.Module, parallel: ParallelState, zero1: bool = False, bucket_mb: float = 100.0):
        device = next(p for p in model.parameters() if p.requires_grad).device
        layouts = flat_layouts(model, parallel.dp_cp_size)
        self.grads = GradBuffer(model, layouts, parallel, device, bucket_mb)
        super().__init__(layouts, parallel, zero1, device, self.grads.replicated)
        self.device = device

    def adamw_step(self, lr: float, betas, eps: float, weight_decay: float, grad_scale: float = 1.0) -> torch.Tensor:
        """AdamW from the gradient buffer (see ``FlatAdamW.step``)."""
        return self.step(self.grads.buffers, lr, betas, eps, weight_decay, grad_scale)


def lr_at(step: int, total_steps: int, peak: float, warmup_ratio: float) -> float:
    """The learning rate of optimizer step ``step`` (from 0): linear warmup over the first
    ceil(warmup_ratio * total) steps, then linear decay to 0. This is HF's
    get_linear_schedule_with_warmup as the reference's Trainer applied it, so the very first step
    runs at lr 0, as it did there."""
    warmup = math.ceil(total_steps * warmup_ratio)
    if step < warmup:
        return peak * step / warmup
    return peak * max(0.0, (total_steps - step) / max(1, total_steps - warmup))
