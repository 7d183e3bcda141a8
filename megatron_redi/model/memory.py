"""How many layers to recompute in full so that a micro-batch's activations fit the GPU.

Selective recompute (ops/rms_norm.py, ops/swiglu.py) keeps every GEMM output and costs no GEMM
again, but what it keeps grows with the tokens of a micro-batch, and the paper's longest pairs
do not fit an 80 GB card that way beside the weights, fp32 master weights, gradients and Adam
moments. A layer recomputed in full keeps only its inputs (the residual stream and the previous
layer's output still to be added: 2 h values a token) and runs its forward again in the backward
(about a third of its cost). ``recompute="auto"`` therefore recomputes the fewest leading layers
in full that make the estimate fit, and keeps the rest selective (docs/performance.md has the
plans measured on H100 and H200).

The estimate, per token of the micro-batch (``e`` bytes per element; ``_l`` the TP rank's share;
the norms' inputs are per local token under sequence parallelism):

    selective layer  e (4 h + 3 nh_l hd + 2 nkv_l hd + 2 f_l) + 4 nh_l + 8
                     (norm inputs x2, the normed GEMM inputs x2, q k v and the attention output
                     kept by SDPA and by the out projection, gate_up, lse and two rstd)
    q/k norm         + e (nh_l + 2 nkv_l) hd: the QKV projection's output, which the fused
                     split keeps to recompute each head's norm in the backward (families.py)
    full layer       2 e h (its inputs)
    context parallel the keys and values SDPA keeps are the whole micro-batch's, gathered over
                     the CP ranks: 2 nkv_l hd becomes 2 cp nkv_l hd per local token
    transient        1.5 selective layers while a layer's backward runs (2.5 when it recomputes)

and the budget is 90 % of the card less what is allocated when the forward starts (weights and
optimizer state) and less ``HEAD_RESERVE`` for the log-prob head's logit chunks.
"""

from __future__ import annotations

import torch

from ..parallel.layout import TPLayout

MEMORY_FRACTION = 0.9  # of the card; the rest for the allocator's fragmentation
HEAD_RESERVE = 4 * 2**30  # the head's fp32 logits and bf16 dlogits of one chunk, with room


def layer_bytes_per_token(layout: TPLayout, sequence_parallel: bool, elem: int, cp: int = 1) -> tuple[float, float]:
    """(selective, full) activation bytes one layer keeps per token of the micro-batch (per local
    token, the rank's share, under context parallelism ``cp``)."""
    cfg, tp = layout.cfg, layout.tp
    h, hd = cfg.hidden_size, cfg.head_dim
    nh, nkv, f = layout.heads_local, layout.kv_heads_local, layout.intermediate_local
    norm_inputs = 2 * h / (tp if sequence_parallel else 1)
    selective = elem * (norm_inputs + 2 * h + 3 * nh * hd + 2 * cp * nkv * hd + 2 * f) + 4 * nh + 8
    if cfg.qk_norm:
        selective += elem * (nh + 2 * nkv) * hd
    full = elem * 2 * h / (tp if sequence_parallel else 1)
    return selective, full


def activation_bytes(layout: TPLayout, tokens: int, sequence_parallel: bool, elem: int, full_layers: int,
                     cp: int = 1) -> float:
    """Activations of a micro-batch with its first ``full_layers`` layers recomputed in full, the
    backward's transient included (``tokens``: the rank's, under context parallelism)."""
    selective, full = layer_bytes_per_token(layout, sequence_parallel, elem, cp)
    transient = (2.5 if full_layers else 1.5) * selective
    return tokens * ((layout.cfg.num_layers - full_layers) * selective + full_layers * full + transient)


def full_recompute_layers(layout: TPLayout, tokens: int, sequence_parallel: bool, elem: int,
                          budget_bytes: float, cp: int = 1) -> int:
    """The fewest layers to recompute in full for ``tokens`` (the rank's, under context
    parallelism) to fit ``budget_bytes`` of activations (all of them when even that does not fit:
    the smallest footprint there is)."""
    layers = layout.cfg.num_layers
    return next((n for n in range(layers + 1)
                 if activation_bytes(layout, tokens, sequence_parallel, elem, n, cp) <= budget_bytes), layers)


def state_bytes(cfg, tp: int, replicas: int, zero1: bool, elem: int = 2) -> float:
    """Weights and optimizer state on one rank: the parameters in the compute dtype and their fp32
    gradient, fp32 master copy and two AdamW moments; the last three sliced over the ``replicas``
    (DP x CP ranks) under ZeRO-1, the fp32 gradient not (it is all-reduced whole)."""
    params = cfg.num_parameters() / tp
    return params * (elem + 4) + params * 12 / (replicas if zero1 else 1)


def host_copy_bytes(cfg, tp: int, replicas: int, zero1: bool) -> float:
    """Host memory an asynchronous checkpoint's copy holds on the rank that holds most, the first
    DP rank of a TP rank: its fp32 master weights and its AdamW moments (a 1/``replicas`` slice
    under ZeRO-1). Pinned on CUDA; a node holds the sum over its ranks."""
    params = cfg.num_parameters() / tp
    return 4 * params + 8 * params / (replicas if zero1 else 1)


def rank_plan(cfg, tp: int, cp: int, dp: int, tokens: int, card_bytes: float, zero1: bool = True,
              elem: int = 2) -> dict:
    """What one rank of a TP x CP x DP run holds for a micro-batch of ``tokens`` on a card of
    ``card_bytes``, as ``recompute="auto"`` would plan it (sequence parallelism with TP > 1)."""
    layout = TPLayout(cfg, tp)
    state = state_bytes(cfg, tp, dp * cp, zero1, elem)
    budget = MEMORY_FRACTION * card_bytes - state - HEAD_RESERVE
    local = -(-tokens // cp)
    full = full_recompute_layers(layout, local, tp > 1, elem, budget, cp)
    activations = activation_bytes(layout, local, tp > 1, elem, full, cp)
    return {"tp": tp, "cp": cp, "dp": dp, "state_bytes": state, "activation_bytes": activations,
            "full_recompute_layers": full, "fits": activations <= budget,
            "host_copy_bytes": host_copy_bytes(cfg, tp, dp * cp, zero1)}


def activation_budget(device: torch.device) -> float:
    """Bytes left for activations on ``device`` at this moment (the forward's start)."""
    total = torch.cuda.get_device_properties(device).total_memory
    return MEMORY_FRACTION * total - torch.cuda.memory_allocated(device) - HEAD_RESERVE
