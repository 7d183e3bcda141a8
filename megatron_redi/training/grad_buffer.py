"""Flat fp32 gradient buffers and their data-parallel all-reduce, overlapped with the backward.

Layout (``FlatLayout``). The trainable parameters fall in two weight-decay groups (decay; none for
biases and norm weights, as the reference's trainer). Each group is laid out in one flat buffer,
parameters in reverse registration order (roughly the order their gradients are ready in the
backward), padded so that ZeRO-1's slices over the data-parallel ranks are equal. The gradients and
the optimizer's buffers (training/optimizer.py) share this layout.

Gradients (``GradBuffer``). Every parameter's fp32 gradient is a view into its group's buffer,
attached through the gradient contract (megatron_redi/main_grad.py). A post-accumulate hook adds
each micro-batch's ``p.grad`` into it and drops ``p.grad`` (unless a layer already wrote it there:
the linear layers, the embedding, the fused head), so accumulation over micro-batches is fp32. In a
step's last micro-batch, a bucket whose parameters have all reported is all-reduced (SUM: the loss
is already scaled by the global batch) asynchronously over the ranks that hold the same parameters
(DP x CP) while the backward goes on; ``finish_reduction`` launches any bucket left and waits.
"""

from __future__ import annotations

import torch

from .. import main_grad
from ..parallel import ParallelState, collectives, replicated_regions


def no_weight_decay(name: str, param: torch.Tensor) -> bool:
    return param.dim() < 2  # biases and norm weights


def counted_once(sum_sq: torch.Tensor, regions) -> torch.Tensor:
    """A sum of squares taken on every TP rank, less what it counts too often: ``regions`` yields
    (values, ranks sharing them) for each region replicated over ``share`` TP ranks, whose squares
    each rank then keeps 1/share of (the TP all-reduce that follows counts them once)."""
    for values, share in regions:
        sum_sq = sum_sq - (1 - 1 / share) * values.square().sum()
    return sum_sq


class FlatLayout:
    """Where each parameter of one weight-decay group sits in a flat buffer of ``numel`` values."""

    def __init__(self, params: list[tuple[str, torch.nn.Parameter]], replicas: int, decay: bool):
        self.params, self.decay = params, decay
        n = sum(p.numel() for _, p in params)
        self.numel = n + (-n % replicas)  # padded so that ZeRO-1 slices are equal
        self.ranges, self.shapes = {}, {}
        offset = 0
        for name, p in params:
            self.ranges[name], self.shapes[name] = (offset, offset + p.numel()), p.shape
            offset += p.numel()

    def view(self, buffer: torch.Tensor, name: str) -> torch.Tensor:
        start, end = self.ranges[name]
        return buffer[start:end].view(self.shapes[name])


def flat_layouts(model: torch.nn.Module, replicas: int) -> list[FlatLayout]:
    """The decay group's layout, then the no-decay group's."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad][::-1]
    return [FlatLayout([(n, p) for n, p in named if no_weight_decay(n, p) == skip], replicas, decay=not skip)
            for skip in (False, True)]


class GradBuffer:
    def __init__(self, model: torch.nn.Module, layouts: list[FlatLayout], parallel: ParallelState,
                 device: torch.device, bucket_mb: float = 100.0):
        self.parallel, self.layouts = parallel, layouts
        self.buffers = [torch.zeros(lay.numel, dtype=torch.float32, device=device) for lay in layouts]
        for lay, buf in zip(layouts, self.buffers):
            for name, p in lay.params:
                main_grad.attach(p, lay.view(buf, name))
        # regions replicated over TP ranks (layout index, name, rows, ranks sharing them): fixed by the model
        where = {name: i for i, lay in enumerate(layouts) for name in lay.ranges}
        self.replicated = [(where[name], name, rows, share) for name, regions in replicated_regions(model).items()
                           for rows, share in regions]
        self._build_buckets(bucket_mb)
        self._reducing, self._handles = False, []
        for _, p in self.named_params():
            p.register_post_accumulate_grad_hook(self._on_grad)

    def named_params(self):
        for lay in self.layouts:
            yield from lay.params

    def _build_buckets(self, bucket_mb: float):
        limit = max(1, int(bucket_mb * 2**20 / 4))
        self.buckets = []  # (buffer, start, end, parameter names)
        for lay, buf in zip(self.layouts, self.buffers):
            start, names = 0, []
            for name, _ in lay.params:
                names.append(name)
                end = lay.ranges[name][1]
                if end - start >= limit:
                    self.buckets.append((buf, start, end, names))
                    start, names = end, []
            if names or start < lay.numel:
                self.buckets.append((buf, start, lay.numel, names))
        bucket_of = {name: i for i, (_, _, _, names) in enumerate(self.buckets) for name in names}
        self._bucket_of = {id(p): bucket_of[n] for n, p in self.named_params()}

    def zero_grad(self):
        """Start a step: zero the gradients and open them to the layers' writes."""
        for buf in self.buffers:
            buf.zero_()
        for _, p in self.named_params():
            p.grad = None
            main_grad.set_open(p, True)

    def start_reduction(self):
        """Call before the backward of a step's last micro-batch: ready buckets reduce as it runs."""
        self._reducing = True
        self._pending = [len(names) for (_, _, _, names) in self.buckets]
        self._launched = [False] * len(self.buckets)

    def _on_grad(self, p):
        # a layer (ops/wgrad.py, the embedding) wrote it already; the single-pass head writes the
        # untied head's during the forward and returns None, after which torch still runs this hook
        if not main_grad.take_delivered(p) and p.grad is not None:
            main_grad.of(p).add_(p.grad)
        p.grad = None
        if self._reducing:
            i = self._bucket_of[id(p)]
            self._pending[i] -= 1
            if self._pending[i] == 0:
                self._launch(i)

    def _launch(self, i):
        if self._launched[i] or self.parallel.dp_cp_size == 1:
            self._launched[i] = True
            return
        buf, start, end, _ = self.buckets[i]
        self._handles.append(collectives.all_reduce(self.parallel, buf[start:end], self.parallel.dp_cp_group,
                                                    async_op=True))
        self._launched[i] = True

    def finish_reduction(self):
        """Launch the buckets that did not fill (parameters whose gradient arrives another way,
        like the fused head's), wait for every reduction, and close the gradients to writes."""
        if self._reducing:
            for i in range(len(self.buckets)):
                self._launch(i)
        for h in self._handles:
            h.wait()
        self._handles, self._reducing = [], False
        for _, p in self.named_params():
            main_grad.set_open(p, False)

    def norm(self) -> torch.Tensor:
        """Global L2 norm of the gradient (fp32), each parameter counted once across TP ranks."""
        # one reduction per buffer, no squared copy of it (4 bytes a parameter); padding is zero
        total = sum(torch.linalg.vector_norm(buf).square() for buf in self.buffers)
        total = counted_once(total, ((self.layouts[i].view(self.buffers[i], name)[rows], share)
                                     for i, name, rows, share in self.replicated))
        collectives.all_reduce(self.parallel, total, self.parallel.tp_group)
        return total.sqrt()
