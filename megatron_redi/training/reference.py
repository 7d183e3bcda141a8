"""DPO's reference pre-pass: the reference model's log-prob sums of every pair, computed once.

``reference_logps`` runs the frozen reference over the pair dataset (each pair on one data-parallel
rank, gathered with one all-reduce) and returns ``[P, 2]`` fp32 sums for (chosen, rejected); the
trainer stores them beside the data (``PairData.store_reference_logps``), where later runs with the
same reference find them, and the reference model then leaves memory.
"""

from __future__ import annotations

import torch
from tqdm import tqdm

from ..data import PairData, TrainingItem, pack
from ..parallel import ParallelState, collectives
from .step import sequence_logps, to_rank


@torch.no_grad()
def reference_logps(reference, pairs: PairData, parallel: ParallelState, micro_batch_tokens: int, pad_token: int,
                    chunk: int, progress: bool) -> torch.Tensor:
    """``[len(pairs), 2]`` log-prob sums of chosen and rejected under ``reference``, on every rank.
    ``chunk`` pairs are packed at a time (the global batch: the packing the training steps see)."""
    p, n = parallel, len(pairs)
    out = torch.zeros(n, 2, dtype=torch.float32, device=p.device)
    mine = list(range(p.dp_rank, n, p.dp_size))
    pad = p.tp_size if p.sequence_parallel else 1
    chunk = max(1, chunk)
    with tqdm(total=len(mine), desc="reference log-probs", disable=not progress) as bar:
        for s in range(0, len(mine), chunk):
            units = [TrainingItem(i, pairs[i]) for i in mine[s:s + chunk]]
            for mb in pack(units, micro_batch_tokens, pad, pad_token):
                mb = to_rank(mb, p)
                logps, _ = sequence_logps(reference, mb)
                items = torch.tensor(mb.items, device=p.device)
                out[items, 0] = logps[mb.pairs.chosen]
                out[items, 1] = logps[mb.pairs.rejected]
            bar.update(len(units))
    collectives.all_reduce(p, out, p.dp_group)  # each pair was computed by exactly one DP rank
    return out
