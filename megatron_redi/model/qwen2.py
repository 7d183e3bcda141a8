"""The former home of the decoder, kept for its import path: ``Qwen2Model`` is ``decoder.Decoder``
(which serves every family of families.py)."""

from .decoder import RECOMPUTE_MODES, Decoder

Qwen2Model = Decoder

__all__ = ["RECOMPUTE_MODES", "Decoder", "Qwen2Model"]
