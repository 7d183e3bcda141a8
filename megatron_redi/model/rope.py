"""Rotary position embedding, with Llama-3's frequency scaling.

Layout: ``x [t, n, hd]``, positions ``[t]`` restarting at 0 per packed sequence. The rotation pairs
dimension i with i + hd/2 (the "rotate half" convention of the HF Qwen2 and Llama checkpoints).
Angles and the rotation are computed in fp32 whatever the activation dtype.

``split_qkv_rotary`` takes the fused QKV projection's output apart into rotated q and k and a
contiguous v: one Triton kernel each way on GPU (ops/triton_kernels.py) instead of a copy of q,
a copy of v and about ten elementwise fp32 passes for the two rotations; it keeps only cos and
sin for the backward. ``split_qkv_rotary_reference`` is the plain version the tests compare with.
"""

from __future__ import annotations

import math

import torch

from ..config import ModelConfig
from ..ops import triton_kernels as tk


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


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x [t, n, hd]`` by the angles of its token; fp32 math, result in x's dtype."""
    xf = x.float()
    x1, x2 = xf.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return (xf * cos[:, None, :] + rotated * sin[:, None, :]).to(x.dtype)


def split_qkv_rotary_reference(qkv, cos, sin):
    """``qkv [t, g, j + 2, hd]`` (per KV group: j query heads, its key, its value) ->
    ``q [t, g j, hd]`` and ``k [t, g, hd]`` rotated, ``v [t, g, hd]``, all contiguous."""
    t, groups, heads, hd = qkv.shape
    q = qkv[:, :, : heads - 2].reshape(t, groups * (heads - 2), hd)
    return apply_rotary(q, cos, sin), apply_rotary(qkv[:, :, -2], cos, sin), qkv[:, :, -1].contiguous()


class _SplitQKVRotary(torch.autograd.Function):
    @staticmethod
    def forward(ctx, qkv, cos, sin):
        ctx.save_for_backward(cos, sin)
        return tk.qkv_rotary_forward(qkv, cos, sin)

    @staticmethod
    def backward(ctx, dq, dk, dv):
        cos, sin = ctx.saved_tensors
        return tk.qkv_rotary_backward(dq, dk, dv, cos, sin), None, None


def split_qkv_rotary(qkv, cos, sin):
    if tk.usable(qkv):
        return _SplitQKVRotary.apply(qkv, cos, sin)
    return split_qkv_rotary_reference(qkv, cos, sin)
