"""Pack sequences into micro-batches (the contract of batch.py), built on the host.

A unit is what must stay together: one SFT sequence, or a pair (prompt + chosen, prompt +
rejected), so that a pair's two log-probs meet in one micro-batch. ``pack`` fills micro-batches up
to a token budget, longest units first (first-fit decreasing), so little room is wasted; a unit
larger than the budget gets a micro-batch of its own.

Every index the step needs (sequence boundaries, response-token positions) is computed here, on
the host, so that the step itself never waits on a device-to-host copy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..batch import MicroBatch, Pairs, SeqBoundaries
from .dataset import Sequence


@dataclass(frozen=True)
class TrainingItem:
    """One item of a step's share of the batch, ready to pack: a pair, or an SFT sequence."""

    item: int  # index in its dataset (a pair or an SFT sequence)
    sequences: tuple[Sequence, ...]  # (chosen, rejected) for a pair, (sequence,) for SFT
    ref_logps: tuple[float, ...] | None = None  # DPO reference sums, one per sequence

    @property
    def num_tokens(self) -> int:
        return sum(len(s.tokens) for s in self.sequences)


Unit = TrainingItem  # the former name, kept working


def build_micro_batch(units: list[TrainingItem], pad_multiple: int = 1, pad_token: int = 0) -> MicroBatch:
    """Concatenate the units' sequences; pad T to a multiple of ``pad_multiple`` (the TP size under
    sequence parallelism) with one dummy sequence that no loss sees."""
    seqs = [s for u in units for s in u.sequences]
    n = len(seqs)
    lengths = [len(s.tokens) for s in seqs]
    pad = -sum(lengths) % pad_multiple
    ids = np.concatenate([s.tokens for s in seqs] + ([np.full(pad, pad_token, np.int64)] if pad else []))
    all_lengths = lengths + ([pad] if pad else [])
    positions = np.concatenate([np.arange(k) for k in all_lengths])
    seq_index = np.repeat(np.arange(len(all_lengths)), all_lengths)
    offsets = np.concatenate([[0], np.cumsum(all_lengths)])
    targets = np.zeros_like(ids)
    mask = np.zeros(len(ids), dtype=bool)
    for s, start, k in zip(seqs, offsets, lengths):
        targets[start:start + k - 1] = s.tokens[1:]
        # label position i predicts token i+1: a response token when i+1 >= prompt_len
        mask[start + max(s.prompt_len - 1, 0):start + k - 1] = True
    per_unit = [len(u.sequences) for u in units]
    starts = np.concatenate([[0], np.cumsum(per_unit)[:-1]]).astype(np.int64)
    pairs = (Pairs(torch.from_numpy(starts), torch.from_numpy(starts + 1)) if per_unit and per_unit[0] == 2
             else Pairs(torch.arange(n)))
    ref = [r for u in units for r in (u.ref_logps or ())]
    return MicroBatch(
        input_ids=torch.from_numpy(ids), position_ids=torch.from_numpy(positions),
        seqs=SeqBoundaries.from_offsets(offsets.tolist(), "cpu"), targets=torch.from_numpy(targets),
        loss_mask=torch.from_numpy(mask), loss_index=torch.from_numpy(np.flatnonzero(mask)),
        seq_index=torch.from_numpy(seq_index), num_seqs=n, pairs=pairs, items=tuple(u.item for u in units),
        response_lengths=torch.tensor([s.response_len for s in seqs], dtype=torch.int64),
        ref_logps=torch.tensor(ref, dtype=torch.float32) if len(ref) == n and n else None,
    )


def pack(units: list[TrainingItem], token_budget: int, pad_multiple: int = 1, pad_token: int = 0) -> list[MicroBatch]:
    """First-fit decreasing: each unit goes to the first micro-batch with room, longest first."""
    bins: list[list[TrainingItem]] = []
    room: list[int] = []
    for unit in sorted(units, key=lambda u: -u.num_tokens):
        for i, free in enumerate(room):
            if unit.num_tokens <= free:
                bins[i].append(unit)
                room[i] -= unit.num_tokens
                break
        else:
            bins.append([unit])
            room.append(token_budget - unit.num_tokens)
    return [build_micro_batch(b, pad_multiple, pad_token) for b in bins]
