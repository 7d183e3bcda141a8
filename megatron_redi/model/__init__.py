"""The decoder (Qwen2 / Llama-3), its attention backends, RoPE, and HF checkpoint loading."""

from .loading import from_pretrained
from .qwen2 import RECOMPUTE_MODES, Qwen2Model

__all__ = ["RECOMPUTE_MODES", "Qwen2Model", "from_pretrained"]
