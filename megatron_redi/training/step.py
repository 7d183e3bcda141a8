"""One optimizer step, in two halves that the trainer and the throughput benchmark both call.

    forward_backward(model, master, batches, loss_cfg, total)   every micro-batch of the step:
        forward -> final hidden states -> fused head on the response rows -> per-sequence
        log-probs -> the micro-batch's loss (its pairs' loss sum / P; SFT: token NLL sum / N)
        -> backward. Under context parallelism each rank runs its share of the tokens and the
        per-sequence sums are added over the CP group, so every CP rank has the whole loss.
        Gradients are summed in the fp32 ``main_grad`` buffers, over micro-batches and over the
        data- and context-parallel ranks (the last micro-batch's backward overlaps that all-reduce),
        then parameters replicated over TP ranks get theirs summed over the ranks sharing them.
    optimizer_step(master, grad_norm, lr, optim)                clip to optim.clip_grad, AdamW on
        the fp32 master weights, copy to the compute-dtype parameters; returns the update's norm.

REDI and SFT use the single-pass head (the per-token gradients are the loss's coefficients,
known before the forward); DPO and SimPO the two-pass one. docs/design.md has the step contract.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from ..batch import MicroBatch
from ..losses import LossConfig, microbatch_loss, sequence_coefficients
from ..parallel import ParallelState, sync_replicated_grads
from ..parallel.context import split
from ..parallel.logprob_head import head_logprobs
from .optimizer import MasterParams


def to_rank(mb: MicroBatch, parallel: ParallelState) -> MicroBatch:
    """A host micro-batch on the rank's device, with its share of the tokens under context
    parallelism (computed on the host, from the boundaries alone)."""
    if parallel.cp_size > 1:
        multiple = parallel.tp_size if parallel.sequence_parallel else 1
        mb = replace(mb, context=split(mb.seqs.host, mb.loss_index, parallel.cp_size, parallel.cp_rank, multiple))
    return mb.to(parallel.device)


def sequence_logps(model, mb: MicroBatch, seq_coeff=None):
    """Per-sequence log-prob sums and token counts of a micro-batch's responses (single-pass head
    when ``seq_coeff``, the loss's d loss / d logp per sequence, is given)."""
    hidden = model(mb.input_ids, mb.position_ids, mb.seqs, context=mb.context)
    return head_logprobs(model, hidden, mb.loss_index, mb.targets, mb.seq_index, mb.num_seqs, seq_coeff,
                         context=mb.context)


@dataclass
class StepResult:
    """What ``forward_backward`` did: the loss of this rank's share of the global batch, its metric
    sums (divide by the global item count for means), and the work done."""

    loss: torch.Tensor  # 0-dim, on the device
    metric_sums: dict[str, torch.Tensor] = field(default_factory=dict)
    seq_lengths: list[int] = field(default_factory=list)  # every real sequence run, in order
    response_tokens: int = 0
    full_recompute_layers: int = 0  # the most any micro-batch recomputed in full


def forward_backward(model, master: MasterParams, batches: list[MicroBatch], loss_cfg: LossConfig, total: float,
                     reference=None, on_phase: Callable[[str], None] | None = None) -> StepResult:
    """Forward and backward of a step's micro-batches. ``total`` is the global batch's P (pairs) or
    N (SFT response tokens); ``reference``, a frozen model whose log-probs DPO compares with (else
    the micro-batches carry them); ``on_phase(name)`` is called as "forward", "head" and "backward"
    end, for a benchmark's timer."""
    master.grads.zero_grad()
    work = StepResult(loss=torch.zeros((), device=master.device))
    for k, mb in enumerate(batches):
        mb = to_rank(mb, model.parallel)
        if k == len(batches) - 1:
            master.grads.start_reduction()
        coeff = sequence_coefficients(loss_cfg, mb.response_lengths, mb.pairs, total) if loss_cfg.linear else None
        layers = model.plan_recompute(mb.num_tokens if mb.context is None else mb.context.rows)
        hidden = model(mb.input_ids, mb.position_ids, mb.seqs, context=mb.context, full_recompute_layers=layers)
        if on_phase:
            on_phase("forward")
        logp_sum, count = head_logprobs(model, hidden, mb.loss_index, mb.targets, mb.seq_index, mb.num_seqs, coeff,
                                        context=mb.context)
        ref = mb.ref_logps
        if reference is not None:
            with torch.no_grad():
                ref, _ = sequence_logps(reference, mb)
        loss, metrics = microbatch_loss(loss_cfg, logp_sum, count, mb.pairs, total, ref)
        if on_phase:
            on_phase("head")
        loss.backward()
        work.full_recompute_layers = max(work.full_recompute_layers, layers)
        work.loss += loss.detach()
        for name, value in metrics.items():
            work.metric_sums[name] = work.metric_sums.get(name, 0) + value
        work.seq_lengths += mb.seqs.lengths[:mb.num_seqs]
        work.response_tokens += mb.num_response_tokens
    master.grads.finish_reduction()
    sync_replicated_grads(model)
    if on_phase:
        on_phase("backward")
    return work


def clip_scale(grad_norm: float, clip: float) -> float:
    """The factor that brings the gradient's norm down to ``clip`` (0: no clipping)."""
    return clip / (grad_norm + 1e-6) if clip and grad_norm > clip else 1.0


def optimizer_step(master: MasterParams, grad_norm: float, lr: float, optim) -> torch.Tensor:
    """Clip, AdamW on the master weights, copy to the model; the update's global norm (0-dim)."""
    sq = master.adamw_step(lr, optim.betas, optim.eps, optim.weight_decay, clip_scale(grad_norm, optim.clip_grad))
    return master.update_norm(sq)
