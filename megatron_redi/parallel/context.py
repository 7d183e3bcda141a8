"""Context parallelism: each packed micro-batch's tokens split over the CP ranks.

Every sequence (the packer's padding sequence included) is cut into ``2 cp`` chunks of nearly equal
length, chunk boundaries at ``floor(i L / 2cp)``; CP rank r keeps chunks ``r`` and ``2cp - 1 - r``.
Under the causal mask a token's attention work grows with its position, so pairing an early chunk
with the matching late one gives every rank about the same work:

    L = 10, cp = 2:   chunks [0,2) [2,5) [5,7) [7,10)     rank 0: [0,2) + [7,10)   rank 1: [2,5) + [5,7)

A rank's tokens are laid out sequence by sequence, each sequence's early chunk before its late one,
then padded to the same count ``n`` on every rank (a multiple of the TP size under sequence
parallelism), so that K/V can be all-gathered in one piece. Chunks need not be whole or non-empty
(a 3-token sequence at cp=2 has one empty chunk); nothing assumes sequence lengths divisible by
anything. The split is a function of the host offsets alone: every rank computes every rank's share
without communicating.

What each consumer reads (``ContextShard``):

    tokens       [n]        the micro-batch position of each local row (0 for the padding rows)
    kv_order     [T]        the row of each micro-batch token in the all-gathered [cp n] K/V
    chunks       host       (local row start, end, key start, key end): the keys a chunk attends to
                            are its sequence's from the first token through the chunk's last
    chunk_keys   [sum of key spans]   those keys' micro-batch positions, chunk after chunk, and
    query_spans, key_spans            the chunks' boundaries in the rows and in those keys (varlen's
                                      cu_seqlens; None when the rank holds no token)
    loss_rows    [t_resp_local]   local rows of this rank's response tokens (for the LM head)
    loss_tokens  [t_resp_local]   their micro-batch positions (targets, sequence of each token)

The rest stays exact with no further work: RoPE reads each row's own position id, the head's
per-sequence sums are summed over the CP group, and every loss sees whole sequences.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..batch import SeqBoundaries


@dataclass(frozen=True)
class ContextShard:
    cp_size: int
    cp_rank: int
    tokens: torch.Tensor  # [n] int64
    kv_order: torch.Tensor  # [T] int64
    loss_rows: torch.Tensor  # [t_resp_local] int64
    loss_tokens: torch.Tensor  # [t_resp_local] int64
    chunk_keys: torch.Tensor  # [sum of key spans] int64
    query_spans: SeqBoundaries | None
    key_spans: SeqBoundaries | None
    chunks: tuple[tuple[int, int, int, int], ...]  # (row start, row end, key start, key end), non-empty only
    real_rows: int  # local rows before the padding

    @property
    def rows(self) -> int:
        return self.tokens.shape[0]

    def to(self, device) -> ContextShard:
        def move(t):
            return t.to(device, non_blocking=True)  # the tensor itself when already there

        return replace(self, tokens=move(self.tokens), kv_order=move(self.kv_order), loss_rows=move(self.loss_rows),
                       loss_tokens=move(self.loss_tokens), chunk_keys=move(self.chunk_keys),
                       query_spans=_spans_on(self.query_spans, device), key_spans=_spans_on(self.key_spans, device))


def _spans_on(spans: SeqBoundaries | None, device) -> SeqBoundaries | None:
    return None if spans is None else SeqBoundaries.from_offsets(spans.host, device)


def chunk_bounds(length: int, cp_size: int) -> list[int]:
    """The ``2 cp + 1`` boundaries of a sequence's chunks, 0 through ``length``."""
    return [i * length // (2 * cp_size) for i in range(2 * cp_size + 1)]


def rank_spans(offsets, cp_size: int, rank: int) -> list[tuple[int, int, int]]:
    """(sequence start, chunk start, chunk end) of every chunk rank ``rank`` holds, in its local
    order; chunk bounds are positions within the sequence."""
    spans = []
    for start, end in zip(offsets, offsets[1:]):
        bounds = chunk_bounds(end - start, cp_size)
        for c in (rank, 2 * cp_size - 1 - rank):
            spans.append((start, bounds[c], bounds[c + 1]))
    return spans


def split(offsets, loss_index, cp_size: int, cp_rank: int, multiple: int = 1) -> ContextShard:
    """This rank's share of a micro-batch with host ``offsets`` (cu_seqlens) and host
    ``loss_index`` (positions of response tokens); ``multiple``: the local row count is padded to
    a multiple of it (the TP size under sequence parallelism)."""
    offsets = [int(o) for o in offsets]
    per_rank = [rank_spans(offsets, cp_size, r) for r in range(cp_size)]
    real = max(sum(e - s for _, s, e in spans) for spans in per_rank)
    n = real + (-real % multiple)
    kv_order = torch.empty(offsets[-1], dtype=torch.int64)
    for r, spans in enumerate(per_rank):
        row = r * n
        for seq_start, s, e in spans:
            kv_order[seq_start + s:seq_start + e] = torch.arange(row, row + e - s)
            row += e - s
    tokens, chunks, row = [], [], 0
    for seq_start, s, e in per_rank[cp_rank]:
        if e > s:
            tokens.append(torch.arange(seq_start + s, seq_start + e))
            chunks.append((row, row + e - s, seq_start, seq_start + e))
            row += e - s
    local = torch.cat(tokens) if tokens else torch.zeros(0, dtype=torch.int64)
    is_loss = torch.zeros(offsets[-1], dtype=torch.bool)
    is_loss[torch.as_tensor(loss_index, dtype=torch.int64)] = True
    loss_rows = torch.nonzero(is_loss[local]).flatten()
    padded = torch.cat((local, torch.zeros(n - row, dtype=torch.int64)))
    keys = torch.cat([torch.arange(k0, k1) for _, _, k0, k1 in chunks]) if chunks else local
    spans = [SeqBoundaries.from_lengths(lengths, "cpu") if chunks else None
             for lengths in ([r1 - r0 for r0, r1, _, _ in chunks], [k1 - k0 for _, _, k0, k1 in chunks])]
    return ContextShard(cp_size, cp_rank, padded, kv_order, loss_rows, local[loss_rows], keys, *spans, tuple(chunks),
                        row)
