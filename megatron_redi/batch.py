"""The packed micro-batch contract shared by the data pipeline, the model and the LM head.

Sequences are concatenated along one token axis ``t`` with no padding between them. Their
boundaries travel twice: as an int32 tensor on the compute device (for kernels) and as a host
tuple (so that Python code choosing kernels or slicing per sequence never waits on the device).
See DESIGN.md, "The micro-batch", for the full list of fields.
"""

from __future__ import annotations

from dataclasses import dataclass
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
