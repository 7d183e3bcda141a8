"""fp32 master weights, fp32 gradient buffers with overlapped data-parallel reduction, and AdamW.

Layout. Every trainable parameter ``p`` (in the compute dtype, bf16 on GPU) gets an fp32 master
copy and an fp32 gradient ``p.main_grad``, both views into flat buffers, one pair per weight-decay
group (decay; no decay for biases and norm weights, as the reference's trainer). Inside a group,
parameters sit in reverse registration order, roughly the order their gradients are ready in the
backward, so the buffers split into contiguous buckets that fill one after another.

"Data-parallel" below means the ranks that hold the same parameters: the data-parallel ranks times
the context-parallel ones (``ParallelState.dp_cp_group``), whose gradients are partial sums, each
over its own share of the batch's tokens.

Gradients. A post-accumulate hook adds each micro-batch's ``p.grad`` into ``p.main_grad`` and drops
``p.grad``, so accumulation over micro-batches is fp32. The fused LM head writes straight into
``main_grad``. In the last micro-batch of a step, a bucket whose parameters have all reported is
all-reduced (SUM: the loss is already scaled by the global batch) asynchronously over the
data-parallel group while the backward goes on; ``finish_reduction`` launches any bucket left and
waits.

Update. AdamW runs over the flat buffers (ops/adamw.py: one Triton kernel on GPU), which also yields
the exact norm of the update (the paper's "gradient step size") without a copy of the weights.
With ZeRO-1 each data-parallel rank updates only its slice of each buffer (and holds only that
slice's moments), then the slices are all-gathered. The master weights are then copied into the
model's parameters.
"""

from __future__ import annotations

import math

import torch

from ..parallel import ParallelState, collectives
from ..ops.adamw import adamw_update


def no_weight_decay(name: str, param: torch.Tensor) -> bool:
    return param.dim() < 2  # biases and norm weights


class _Group:
    def __init__(self, params, device, dp: int):
        self.params = params
        n = sum(p.numel() for _, p in params)
        self.numel = n + (-n % dp)  # padded so that ZeRO-1 slices are equal
        self.master = torch.zeros(self.numel, dtype=torch.float32, device=device)
        self.grad = torch.zeros(self.numel, dtype=torch.float32, device=device)
        # The parameters become views of one flat buffer in their (common) dtype: one copy per update.
        dtypes = {p.dtype for _, p in params}
        if len(dtypes) > 1:
            raise ValueError(f"parameters of one model must share a dtype, got {sorted(map(str, dtypes))}")
        self.model = torch.zeros(self.numel, dtype=dtypes.pop() if dtypes else torch.float32, device=device)
        self.ranges, self.shapes = {}, {}
        offset = 0
        for name, p in params:
            self.ranges[name], self.shapes[name] = (offset, offset + p.numel()), p.shape
            self.master[offset:offset + p.numel()].copy_(p.detach().reshape(-1))
            p.main_grad = self.grad[offset:offset + p.numel()].view_as(p)
            self.model[offset:offset + p.numel()].copy_(p.detach().reshape(-1))
            p.data = self.model[offset:offset + p.numel()].view_as(p)
            offset += p.numel()


class MasterParams:
    def __init__(self, model: torch.nn.Module, parallel: ParallelState, zero1: bool = False, bucket_mb: float = 100.0):
        self.model, self.parallel, self.zero1 = model, parallel, zero1
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad][::-1]
        self.device = device = named[0][1].device
        dp = parallel.dp_cp_size
        self.groups = [_Group([(n, p) for n, p in named if not no_weight_decay(n, p)], device, dp),
                       _Group([(n, p) for n, p in named if no_weight_decay(n, p)], device, dp)]
        self.weight_decay_groups = (True, False)
        # optimizer state: for ZeRO-1 only this rank's slice of each group
        self.slices = [self._my_slice(g) for g in self.groups]
        self.exp_avg = [torch.zeros(s.stop - s.start, dtype=torch.float32, device=device) for s in self.slices]
        self.exp_avg_sq = [torch.zeros_like(m) for m in self.exp_avg]
        self.step_count = 0
        # regions replicated over TP ranks (name, rows, ranks sharing them): fixed by the model
        self._replicated = [(name, rows, share) for name, regions in _replicated_regions(model).items()
                            for rows, share in regions]
        self._build_buckets(bucket_mb)
        self._reducing = False
        self._handles = []
        for _, p in named:
            p.register_post_accumulate_grad_hook(self._on_grad)

    def _my_slice(self, g: _Group) -> slice:
        if not self.zero1:
            return slice(0, g.numel)
        size = g.numel // self.parallel.dp_cp_size
        return slice(self.parallel.dp_cp_rank * size, (self.parallel.dp_cp_rank + 1) * size)

    def _build_buckets(self, bucket_mb):
        limit = max(1, int(bucket_mb * 2**20 / 4))
        self.buckets = []  # (group, start, end, parameter names)
        self._bucket_of = {}
        for g in self.groups:
            start, names = 0, []
            for name, p in g.params:
                names.append(name)
                end = g.ranges[name][1]
                if end - start >= limit:
                    self.buckets.append((g, start, end, names))
                    start, names = end, []
            if names or start < g.numel:
                self.buckets.append((g, start, g.numel, names))
        for i, (_, _, _, names) in enumerate(self.buckets):
            for name in names:
                self._bucket_of[name] = i
        self._param_name = {id(p): n for g in self.groups for n, p in g.params}

    # ---- gradients ------------------------------------------------------------------------------

    def zero_grad(self):
        for g in self.groups:
            g.grad.zero_()
        for _, p in self.named_params():
            p.grad = None

    def named_params(self):
        for g in self.groups:
            yield from g.params

    def start_reduction(self):
        """Call before the backward of a step's last micro-batch: ready buckets reduce as it runs."""
        self._reducing = True
        self._pending = [len(names) for (_, _, _, names) in self.buckets]
        self._launched = [False] * len(self.buckets)

    def _on_grad(self, p):
        if getattr(p, "grad_in_main_grad", False):  # ops/wgrad.py (the linear layers, the head) accumulated it
            p.grad_in_main_grad = False
        else:
            p.main_grad.add_(p.grad)
        p.grad = None
        if self._reducing:
            i = self._bucket_of[self._param_name[id(p)]]
            self._pending[i] -= 1
            if self._pending[i] == 0:
                self._launch(i)

    def _launch(self, i):
        if self._launched[i] or self.parallel.dp_cp_size == 1:
            self._launched[i] = True
            return
        g, start, end, _ = self.buckets[i]
        self._handles.append(collectives.all_reduce(self.parallel, g.grad[start:end], self.parallel.dp_cp_group,
                                                    async_op=True))
        self._launched[i] = True

    def finish_reduction(self):
        """Launch the buckets that did not fill (parameters whose gradient arrives another way,
        like the fused head's) and wait for every reduction."""
        if self._reducing:
            for i in range(len(self.buckets)):
                self._launch(i)
        for h in self._handles:
            h.wait()
        self._handles, self._reducing = [], False

    def _replicated_views(self, buffer: str):
        """(view of a replicated region in each group's ``buffer``, TP ranks sharing it)."""
        for name, rows, share in self._replicated:
            g = self._group_of(name)
            start, end = g.ranges[name]
            yield getattr(g, buffer)[start:end].view(g.shapes[name])[rows], share

    def grad_norm(self) -> torch.Tensor:
        """Global L2 norm of the gradient (fp32), each parameter counted once across TP ranks."""
        # one reduction per buffer, no squared copy of it (4 bytes a parameter); padding is zero
        total = sum(torch.linalg.vector_norm(g.grad).square() for g in self.groups)
        for view, share in self._replicated_views("grad"):
            total = total - (1 - 1 / share) * view.square().sum()
        collectives.all_reduce(self.parallel, total, self.parallel.tp_group)
        return total.sqrt()

    # ---- update ---------------------------------------------------------------------------------

    @torch.no_grad()
    def adamw_step(self, lr: float, betas, eps: float, weight_decay: float, grad_scale: float = 1.0) -> torch.Tensor:
        """One AdamW step on this rank's slices from ``grad_scale`` x the gradient (clipping), then
        the model's parameters updated. Returns this rank's share of the squared norm of the
        update, replicated parameters counted once over the TP ranks that share them."""
        self.step_count += 1
        replicated = list(self._replicated_views("master"))
        before = [view.clone() for view, _ in replicated]
        sharded = self.zero1 and self.parallel.dp_cp_size > 1
        sq = torch.zeros((), dtype=torch.float32, device=self.groups[0].master.device)
        for g, decay, sl, m, v in zip(self.groups, self.weight_decay_groups, self.slices,
                                      self.exp_avg, self.exp_avg_sq):
            out = None if sharded else g.model[sl]  # the bf16 copy, in the same pass
            sq += adamw_update(g.master[sl], g.grad[sl], m, v, lr, betas, eps,
                               weight_decay if decay else 0.0, self.step_count, grad_scale, out)
        if sharded:
            for g, sl in zip(self.groups, self.slices):
                collectives.all_gather(self.parallel, g.master, g.master[sl].clone(), self.parallel.dp_cp_group)
            self.copy_to_model()
        # After ZeRO-1's gather every DP rank sees the whole replicated update: let one count it.
        if not (self.zero1 and self.parallel.dp_cp_rank > 0):
            for (view, share), old in zip(replicated, before):
                sq -= (1 - 1 / share) * (view - old).square().sum()
        return sq

    def update_norm(self, sq: torch.Tensor) -> torch.Tensor:
        """The global norm of the step, from every rank's ``adamw_step`` share."""
        if self.zero1:
            collectives.all_reduce(self.parallel, sq, self.parallel.dp_cp_group)
        collectives.all_reduce(self.parallel, sq, self.parallel.tp_group)
        return sq.clamp_min(0).sqrt()

    def _group_of(self, name):
        return next(g for g in self.groups if name in g.ranges)

    @torch.no_grad()
    def copy_to_model(self):
        for g in self.groups:
            g.model.copy_(g.master)

    def master_tensors(self) -> dict[str, torch.Tensor]:
        """Native name -> fp32 master weight (views, shaped like the parameters)."""
        out = {}
        for g in self.groups:
            for name, p in g.params:
                start, end = g.ranges[name]
                out[name] = g.master[start:end].view_as(p)
        return out

    def all_finite(self) -> bool:
        return all(bool(torch.isfinite(g.master).all()) for g in self.groups)

    # ---- state ----------------------------------------------------------------------------------

    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {}
        for i in range(len(self.groups)):
            out[f"exp_avg.{i}"], out[f"exp_avg_sq.{i}"] = self.exp_avg[i], self.exp_avg_sq[i]
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], step_count: int):
        for i in range(len(self.groups)):
            for key, mine in ((f"exp_avg.{i}", self.exp_avg[i]), (f"exp_avg_sq.{i}", self.exp_avg_sq[i])):
                if key not in tensors or tensors[key].shape != mine.shape:
                    raise ValueError(f"optimizer state {key}: expected shape {list(mine.shape)}")
                mine.copy_(tensors[key])
        self.step_count = step_count

    def load_master(self, tensors: dict[str, torch.Tensor]):
        for g in self.groups:
            for name, p in g.params:
                start, end = g.ranges[name]
                g.master[start:end].copy_(tensors[name].reshape(-1))
        self.copy_to_model()


def _replicated_regions(model) -> dict[str, list[tuple[slice, int]]]:
    """Parameter name -> [(rows, number of TP ranks sharing them)] from the model's marks."""
    out = {}
    for mod_name, module in model.named_modules():
        for param_name, rows, group in module.__dict__.get("replicated_params", ()):
            full = f"{mod_name}.{param_name}" if mod_name else param_name
            out.setdefault(full, []).append((rows, collectives.group_size(group)))
    return out


def lr_at(step: int, total_steps: int, peak: float, warmup_ratio: float) -> float:
    """The learning rate of optimizer step ``step`` (from 0): linear warmup over the first
    ceil(warmup_ratio * total) steps, then linear decay to 0. This is HF's
    get_linear_schedule_with_warmup as the reference's Trainer applied it, so the very first step
    runs at lr 0, as it did there."""
    warmup = math.ceil(total_steps * warmup_ratio)
    if step < warmup:
        return peak * step / warmup
    return peak * max(0.0, (total_steps - step) / max(1, total_steps - warmup))
