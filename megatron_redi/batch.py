"""The packed micro-batch: one contract for the data pipeline, the model, the LM head and the losses.

Sequences are concatenated along one token axis ``t`` with no padding between them. Their
boundaries travel twice: as an int32 tensor on the compute device (for kernels) and as a host
tuple (so that Python code choosing kernels or slicing per sequence never waits on the device).

    SeqBoundaries   where the packed sequences start and end
    Pairs           which sequences form a (chosen, rejected) pair (for SFT: every sequence)
    MicroBatch      everything one forward/backward needs, built on the host by data/packing.py

docs/design.md describes each field and who reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import torch


@dataclass(frozen=True)
class SeqBoundaries:
    cu_seqlens: torch.Tensor  # [N+1] int32, on the compute device
    host: tuple[int, ...]  # the same offsets on the host
    max_seqlen: int

    @property
    def num_seqs(self) -> int:
        return len(self.host) - 1

    @property
    def num_tokens(self) -> int:
        return self.host[-1]

    @property
    def lengths(self) -> list[int]:
        return [b - a for a, b in zip(self.host, self.host[1:])]

    @classmethod
    def from_offsets(cls, offsets: Sequence[int], device) -> SeqBoundaries:
        offsets = tuple(int(o) for o in offsets)
        if len(offsets) < 2 or offsets[0] != 0 or any(b <= a for a, b in zip(offsets, offsets[1:])):
            raise ValueError(f"cu_seqlens must start at 0 and increase strictly, got {list(offsets)[:16]}")
        lengths = [b - a for a, b in zip(offsets, offsets[1:])]
        tensor = torch.tensor(offsets, dtype=torch.int32).to(device, non_blocking=True)
        return cls(tensor, offsets, max(lengths))

    @classmethod
    def from_lengths(cls, lengths: Sequence[int], device) -> SeqBoundaries:
        offsets = [0]
        for n in lengths:
            offsets.append(offsets[-1] + int(n))
        return cls.from_offsets(offsets, device)

    @classmethod
    def coerce(cls, value, device) -> SeqBoundaries:
        """Accept a SeqBoundaries, a host sequence of offsets, or a CPU tensor of offsets.

        A device tensor is refused: reading it back would stall the step on a device-to-host sync,
        which the host copy exists to avoid.
        """
        if isinstance(value, SeqBoundaries):
            return value
        if isinstance(value, torch.Tensor):
            if value.device.type != "cpu":
                raise ValueError("cu_seqlens on the device needs its host copy: pass a SeqBoundaries "
                                 "or a host list of offsets")
            value = value.tolist()
        return cls.from_offsets(value, device)


@dataclass(frozen=True)
class Pairs:
    """Which sequences of a micro-batch form its pairs: ``chosen[i]`` and ``rejected[i]`` index
    the micro-batch's sequences (for SFT, ``rejected`` is None and ``chosen`` lists every sequence)."""

    chosen: torch.Tensor  # [P_mb] int64
    rejected: torch.Tensor | None = None  # [P_mb] int64


@dataclass
class MicroBatch:
    """N real sequences, T tokens (padding included); every index is computed on the host."""

    input_ids: torch.Tensor  # [T] int64
    position_ids: torch.Tensor  # [T] int64, restarting at 0 per sequence
    seqs: SeqBoundaries  # cu_seqlens [N+1] (+1 for a padding sequence), device and host
    targets: torch.Tensor  # [T] int64: the next token within the sequence (0 where none)
    loss_mask: torch.Tensor  # [T] bool: targets[i] is a response token
    loss_index: torch.Tensor  # [t_resp] int64: positions where loss_mask is true (host-computed)
    seq_index: torch.Tensor  # [T] int64: sequence of each token (num_seqs for padding)
    response_lengths: torch.Tensor  # [N] int64: response tokens of each sequence (host-computed)
    num_seqs: int  # N, real sequences
    pairs: Pairs  # chosen/rejected sequence indices (SFT: chosen lists every sequence)
    items: tuple[int, ...]  # dataset index of each unit, in order
    ref_logps: torch.Tensor | None = None  # [N] DPO reference sums
    # under context parallelism, this rank's share of the tokens: a parallel.context.ContextShard
    # (attached by training.step.to_rank; the layer above this module owns its type)
    context: object | None = None

    @property
    def num_tokens(self) -> int:
        return self.input_ids.shape[0]

    @property
    def num_response_tokens(self) -> int:
        return self.loss_index.shape[0]

    def to(self, device) -> MicroBatch:
        def move(t):
            return t.to(device, non_blocking=True)  # the tensor itself when already there

        return replace(
            self,
            input_ids=move(self.input_ids), position_ids=move(self.position_ids), targets=move(self.targets),
            loss_mask=move(self.loss_mask), loss_index=move(self.loss_index), seq_index=move(self.seq_index),
            response_lengths=move(self.response_lengths),
            seqs=SeqBoundaries.from_offsets(self.seqs.host, device),
            pairs=Pairs(move(self.pairs.chosen), None if self.pairs.rejected is None else move(self.pairs.rejected)),
            ref_logps=None if self.ref_logps is None else move(self.ref_logps),
            context=None if self.context is None else self.context.to(device),
        )
