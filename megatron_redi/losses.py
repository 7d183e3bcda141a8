"""The losses of REDI and its baselines, as small pure functions of per-sequence log-probs.

Inputs are per-sequence sums of token log-probs (``*_logps``, fp32) and response token counts
(``*_lengths``); each function returns one loss per pair (or per sequence for SFT). Every path that
produces log-probs (fused head, reference pre-pass, tests) shares them.

    redi       -logp_w/|y_w| + alpha * logp_l/|y_l|            (alpha=1: symmetric REDI;
                                                                alpha=0: per-sequence-mean SFT)
    simpo      -log sigmoid(beta (logp_w/|y_w| - logp_l/|y_l|) - gamma)   (Eq. 3)
                 + nll_weight * (-logp_w/|y_w|)      (TRL's CPOTrainer adds this with its cpo_alpha,
                                                      1.0 by default; 0 here: Eq. 3 alone)
    dpo        -log sigmoid(beta ((logp_w - ref_w) - (logp_l - ref_l))), with label smoothing
    sft        -logp (token mean over the global batch), or -logp/|y| (per-sequence mean)

The step contract (docs/design.md): a global batch of P pairs (SFT: S sequences, N response tokens) is
planned before its first micro-batch; each micro-batch contributes ``sum of its losses / P``
(SFT: ``/ N`` or ``/ S``) and gradients are summed over micro-batches and data-parallel ranks, which
equals the mean over the whole global batch whatever the split. ``microbatch_loss`` applies that
scaling; ``sequence_coefficients`` gives, for the losses linear in the log-probs, each sequence's
d(scaled loss)/d(logp), which the fused head's single-pass mode needs before the forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .batch import Pairs
from .settings import check_settings, choice, setting

LOSS_TYPES = ("redi", "symmetric", "dpo", "simpo", "sft")
# Each loss's own defaults are the paper's best configuration of it (Appendix C.4); no loss takes
# another's: DPO's beta 0.001 (lr 2e-7), SimPO's beta 2 and gamma 1 (lr 5e-7), REDI's alpha 0.8.
REDI_ALPHA, DPO_BETA, SIMPO_BETA, SIMPO_GAMMA = 0.8, 0.001, 2.0, 1.0


def redi(chosen_logps, chosen_lengths, rejected_logps, rejected_lengths, alpha: float = REDI_ALPHA):
    return -chosen_logps / chosen_lengths + alpha * rejected_logps / rejected_lengths


def symmetric_redi(chosen_logps, chosen_lengths, rejected_logps, rejected_lengths):
    return redi(chosen_logps, chosen_lengths, rejected_logps, rejected_lengths, alpha=1.0)


def _smoothed_sigmoid_loss(logits, label_smoothing: float):
    return -F.logsigmoid(logits) * (1 - label_smoothing) - F.logsigmoid(-logits) * label_smoothing


def simpo(chosen_logps, chosen_lengths, rejected_logps, rejected_lengths, beta: float = SIMPO_BETA,
          gamma: float = SIMPO_GAMMA, label_smoothing: float = 0.0, nll_weight: float = 0.0):
    margin = chosen_logps / chosen_lengths - rejected_logps / rejected_lengths
    loss = _smoothed_sigmoid_loss(beta * margin - gamma, label_smoothing)
    # TRL's NLL is a token mean over a device's micro-batch: over one chosen response in the
    # reference's runs (one pair per device), that is, this per-pair mean
    return loss - nll_weight * chosen_logps / chosen_lengths if nll_weight else loss


def dpo(chosen_logps, chosen_lengths, rejected_logps, rejected_lengths, ref_chosen_logps,
        ref_rejected_logps, beta: float = DPO_BETA, label_smoothing: float = 0.0):
    # lengths are unused: DPO compares sums; kept in the signature so every pairwise loss is called alike
    logits = (chosen_logps - ref_chosen_logps) - (rejected_logps - ref_rejected_logps)
    return _smoothed_sigmoid_loss(beta * logits, label_smoothing)


def sft(logps, lengths, per_sequence_mean: bool = False):
    """Per-sequence NLL: the sum (for stage 1's token mean over the global batch) or the mean."""
    return -logps / lengths if per_sequence_mean else -logps


@dataclass(frozen=True)
class LossConfig:
    type: str = choice("redi", LOSS_TYPES, "symmetric: REDI with alpha 1; sft for stage 1")
    alpha: float = setting(REDI_ALPHA, "REDI: weight of the rejected trace's normalised log-prob, in [0, 1]")
    beta: float | None = setting(None, "DPO / SimPO inverse temperature (default: the loss's own, DPO 0.001, SimPO 2)")
    gamma: float = setting(SIMPO_GAMMA, "SimPO target margin")
    label_smoothing: float = setting(0.0, "DPO / SimPO")
    nll_weight: float = setting(0.0, "SimPO: weight of the chosen response's mean NLL added to Eq. 3 (TRL's cpo_alpha, "
                                     "1.0 in its CPOTrainer; 0: Eq. 3 alone)")
    per_sequence_mean: bool = setting(False, "SFT: average per sequence instead of per token")

    def __post_init__(self):
        check_settings(self)
        if self.beta is None and self.type in ("dpo", "simpo"):
            object.__setattr__(self, "beta", DPO_BETA if self.type == "dpo" else SIMPO_BETA)
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.type in ("dpo", "simpo") and self.beta <= 0:
            raise ValueError(f"beta must be positive, got {self.beta}")
        if self.nll_weight and self.type != "simpo":
            raise ValueError(f"nll_weight is SimPO's (TRL's cpo_alpha); the {self.type} loss has none")
        if self.nll_weight < 0:
            raise ValueError(f"nll_weight must be at least 0, got {self.nll_weight}")
        if not 0.0 <= self.label_smoothing < 0.5:  # at 0.5 the loss no longer prefers either trace
            raise ValueError(f"label_smoothing must be in [0, 0.5), got {self.label_smoothing}")

    @property
    def pairwise(self) -> bool:
        return self.type != "sft"

    @property
    def linear(self) -> bool:
        """Linear in the log-prob sums: token gradients are known before the forward."""
        return self.type in ("redi", "symmetric", "sft")

    @property
    def needs_reference(self) -> bool:
        return self.type == "dpo"


def pair_losses(cfg: LossConfig, chosen_logps, chosen_lengths, rejected_logps, rejected_lengths,
                ref_chosen_logps=None, ref_rejected_logps=None):
    args = (chosen_logps, chosen_lengths, rejected_logps, rejected_lengths)
    if cfg.type == "redi":
        return redi(*args, alpha=cfg.alpha)
    if cfg.type == "symmetric":
        return symmetric_redi(*args)
    if cfg.type == "simpo":
        return simpo(*args, beta=cfg.beta, gamma=cfg.gamma, label_smoothing=cfg.label_smoothing,
                     nll_weight=cfg.nll_weight)
    if cfg.type == "dpo":
        if ref_chosen_logps is None or ref_rejected_logps is None:
            raise ValueError("DPO needs the reference model's log-probs of chosen and rejected")
        return dpo(*args, ref_chosen_logps, ref_rejected_logps, beta=cfg.beta,
                   label_smoothing=cfg.label_smoothing)
    raise ValueError(f"{cfg.type!r} is not a pairwise loss")


def microbatch_loss(cfg: LossConfig, logp_sum, token_count, pairs: Pairs, global_total: float,
                    ref_logp_sum=None):
    """The micro-batch's share of the global batch's mean loss, and its metric sums.

    ``global_total`` is the global batch's P (pairs), or for SFT its N (response tokens) or, with
    per_sequence_mean, its S (sequences). Metric values are sums over this micro-batch's pairs
    (sequences for SFT): add them over micro-batches and ranks, then divide by the global count.
    """
    lengths = token_count.to(logp_sum.dtype)
    if not cfg.pairwise:
        seq = pairs.chosen
        losses = sft(logp_sum[seq], lengths[seq], cfg.per_sequence_mean)
        metrics = {"logps/mean": (logp_sum[seq] / lengths[seq]).sum(), "lengths/mean": lengths[seq].sum()}
        return losses.sum() / global_total, {k: v.detach() for k, v in metrics.items()}
    c, r = pairs.chosen, pairs.rejected
    ref_c = ref_r = None
    if ref_logp_sum is not None:
        ref_c, ref_r = ref_logp_sum[c], ref_logp_sum[r]
    losses = pair_losses(cfg, logp_sum[c], lengths[c], logp_sum[r], lengths[r], ref_c, ref_r)
    metrics = pair_metric_sums(cfg, logp_sum[c], lengths[c], logp_sum[r], lengths[r], ref_c, ref_r)
    return losses.sum() / global_total, metrics


@torch.no_grad()
def pair_metric_sums(cfg: LossConfig, chosen_logps, chosen_lengths, rejected_logps, rejected_lengths,
                     ref_chosen_logps=None, ref_rejected_logps=None) -> dict[str, torch.Tensor]:
    """Sums over pairs of the metrics the paper plots (divide by the pair count for means).

    ``logps/*_mean`` is the per-token log-prob, the paper's "LogPS". The reward of a sequence is
    what the loss compares: beta (logp - ref) for DPO, beta logp/|y| for SimPO, logp/|y| for REDI.
    """
    chosen_mean, rejected_mean = chosen_logps / chosen_lengths, rejected_logps / rejected_lengths
    if cfg.type == "dpo":
        reward_c = cfg.beta * (chosen_logps - ref_chosen_logps)
        reward_r = cfg.beta * (rejected_logps - ref_rejected_logps)
    elif cfg.type == "simpo":
        reward_c, reward_r = cfg.beta * chosen_mean, cfg.beta * rejected_mean
    else:
        reward_c, reward_r = chosen_mean, rejected_mean
    return {
        "logps/chosen": chosen_logps.sum(),
        "logps/rejected": rejected_logps.sum(),
        "logps/chosen_mean": chosen_mean.sum(),
        "logps/rejected_mean": rejected_mean.sum(),
        "rewards/chosen": reward_c.sum(),
        "rewards/rejected": reward_r.sum(),
        "rewards/margin": (reward_c - reward_r).sum(),
        "rewards/accuracy": (reward_c > reward_r).to(chosen_logps.dtype).sum(),
        "lengths/chosen": chosen_lengths.sum(),
        "lengths/rejected": rejected_lengths.sum(),
    }


def sequence_coefficients(cfg: LossConfig, token_count, pairs: Pairs, global_total: float):
    """d(microbatch_loss)/d(logp_sum[n]) for every sequence n of the micro-batch, ``[N]`` fp32.

    Defined only for losses linear in the log-probs (REDI, symmetric REDI, SFT), where it does not
    depend on the log-probs themselves: -1/(|y_w| P) for a chosen sequence and +alpha/(|y_l| P)
    for a rejected one in REDI; -1/N per token in SFT. It is obtained by differentiating
    ``microbatch_loss`` itself, so the two can never disagree. A token's ``token_coeff`` for the
    fused head is its sequence's coefficient: the head's logp_sum is a plain sum over tokens.
    """
    if not cfg.linear:
        raise ValueError(f"{cfg.type} is not linear in the log-probs: use the two-pass head")
    logp = torch.zeros(token_count.shape, dtype=torch.float32, device=token_count.device, requires_grad=True)
    with torch.enable_grad():
        loss, _ = microbatch_loss(cfg, logp, token_count, pairs, global_total)
        (coeff,) = torch.autograd.grad(loss, logp, allow_unused=True)
    return coeff if coeff is not None else torch.zeros_like(logp)
