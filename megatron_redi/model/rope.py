"""Rotary position embedding: position ids -> the ``cos, sin [t, hd]`` tables, with Llama-3's
frequency scaling.

Positions ``[t]`` restart at 0 per packed sequence; the angles are fp32 whatever the activation
dtype. The rotation itself, fused with the split of the QKV projection, is ops/qkv_rotary.py.
"""

from __future__ import annotations

import math

import torch

from ..model_config import ModelConfig


def inverse_frequencies(cfg: ModelConfig) -> torch.Tensor:
    """``[hd/2]`` fp32 rotation speeds, ``theta^(-2i/hd)``, rescaled for Llama-3 when configured."""
    hd = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    s = cfg.rope_scaling
    if s is None:
        return inv_freq
    # Llama-3: wavelengths longer than the original context / low_freq_factor are slowed by
    # `factor`, those shorter than context / high_freq_factor are kept, and the band between
    # is interpolated linearly in (context / wavelength).
    wavelength = 2 * math.pi / inv_freq
    ctx = s.original_max_position_embeddings
    slow = inv_freq / s.factor
    blend = (ctx / wavelength - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor)
    mixed = (1 - blend) * slow + blend * inv_freq
    out = torch.where(wavelength > ctx / s.low_freq_factor, slow, inv_freq)
    in_band = (wavelength <= ctx / s.low_freq_factor) & (wavelength >= ctx / s.high_freq_factor)
    return torch.where(in_band, mixed, out)


class RotaryEmbedding:
    """Turns position ids into the ``cos, sin [t, hd]`` tables, once per forward."""

    def __init__(self, cfg: ModelConfig):
        self.inv_freq_cpu = inverse_frequencies(cfg)
        self._inv_freq = {}  # device -> tensor; not a buffer so that meta construction is free

    def __call__(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        device = position_ids.device
        if device not in self._inv_freq:
            self._inv_freq[device] = self.inv_freq_cpu.to(device)
        angles = position_ids.float()[:, None] * self._inv_freq[device][None, :]  # [t, hd/2]
        angles = torch.cat((angles, angles), dim=-1)  # [t, hd]
        return angles.cos(), angles.sin()
