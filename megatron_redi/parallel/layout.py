"""How a model is split over ``tp`` tensor-parallel ranks: the one place the layout rules live.

The model, the checkpoint converter, the checkpoint checker and the memory plan all read a
``TPLayout`` built from (model config, TP size), so that they cannot disagree. Building one
validates the TP size against every dimension it splits:

    query heads nh           split: nh/tp per rank
    KV heads nkv             split when tp <= nkv (nkv/tp per rank); when tp > nkv each KV head is
                             replicated on the tp/nkv consecutive ranks whose query heads use it
    MLP width f, vocab V     split: f/tp, V/tp per rank

The fused QKV projection is laid out per local KV group g as [q heads of g, k_g, v_g], so that a
contiguous chunk of rows holds whole groups; ``qkv_row_blocks`` says which rows of the HF q / k / v
tensors make up a rank's chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..cli import UserError
from ..model_config import ModelConfig


class LayoutError(UserError):
    """A TP size that the model cannot be split over."""


def divide(numerator: int, denominator: int, what: str = "value") -> int:
    """Exact division for per-partition sizes; a clear error when it does not divide."""
    if numerator % denominator:
        raise LayoutError(f"{what} ({numerator}) is not divisible by {denominator}")
    return numerator // denominator


def chunk(n: int, rank: int, tp: int) -> slice:
    """Rank r's contiguous share of ``n`` rows (or columns)."""
    size = divide(n, tp)
    return slice(rank * size, (rank + 1) * size)


@dataclass(frozen=True)
class TPLayout:
    cfg: ModelConfig
    tp: int

    def __post_init__(self):
        cfg, tp = self.cfg, self.tp
        if tp < 1:
            raise LayoutError(f"TP size must be at least 1, got {tp}")
        for what, n in (("num_attention_heads", cfg.num_heads), ("vocab_size", cfg.vocab_size),
                        ("intermediate_size", cfg.intermediate_size)):
            if n % tp:
                raise LayoutError(f"TP size {tp} does not divide {what} ({n})")
        kv = cfg.num_kv_heads
        if (kv % tp) if tp <= kv else (tp % kv):
            raise LayoutError(f"TP size {tp} and num_key_value_heads ({kv}): one must divide the other")

    @property
    def heads_local(self) -> int:
        return self.cfg.num_heads // self.tp

    @property
    def kv_heads_local(self) -> int:
        """KV heads each rank holds: nkv/tp when TP splits them, 1 (a replica) when tp > nkv."""
        return max(1, self.cfg.num_kv_heads // self.tp)

    @property
    def kv_replicas(self) -> int:
        """Ranks holding each KV head: 1 when TP splits them, tp/nkv when it replicates them."""
        return max(1, self.tp // self.cfg.num_kv_heads)

    @property
    def queries_per_group(self) -> int:
        return self.heads_local // self.kv_heads_local

    @property
    def intermediate_local(self) -> int:
        return self.cfg.intermediate_size // self.tp

    @property
    def vocab_local(self) -> int:
        return self.cfg.vocab_size // self.tp

    @property
    def qkv_rows_local(self) -> int:
        """Rows of the rank's fused QKV weight: its query heads, then a key and a value per group."""
        return (self.heads_local + 2 * self.kv_heads_local) * self.cfg.head_dim

    def qkv_row_blocks(self, rank: int) -> list[tuple[int, slice]]:
        """Rank r's fused QKV rows as (HF tensor 0/1/2 for q/k/v, rows of that tensor) blocks, in order."""
        hd, q_per_group = self.cfg.head_dim, self.queries_per_group
        first_group = rank * self.kv_heads_local if self.kv_replicas == 1 else rank // self.kv_replicas
        blocks = []
        for j in range(self.kv_heads_local):
            q0, g = rank * self.heads_local + j * q_per_group, first_group + j
            blocks += [(0, slice(q0 * hd, (q0 + q_per_group) * hd)),
                       (1, slice(g * hd, (g + 1) * hd)),
                       (2, slice(g * hd, (g + 1) * hd))]
        return blocks
