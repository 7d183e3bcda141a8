"""The decoder (every family of families.py), its attention backends, RoPE, and HF checkpoint loading.
``Qwen2Model`` is the decoder's former name, kept as an alias."""

from .decoder import RECOMPUTE_MODES, Decoder
from .loading import from_pretrained

Qwen2Model = Decoder

__all__ = ["RECOMPUTE_MODES", "Decoder", "Qwen2Model", "from_pretrained"]
