"""Memory-lean elementwise ops of the decoder: keep the GEMM outputs, recompute the cheap parts.

Plain autograd keeps every intermediate of an elementwise chain. These Functions keep only what
the backward cannot cheaply rebuild, and recompute the rest:

    rms_norm(x, w, delta)     h = x + delta and norm(h): saves h and rstd [t] (plain: fp32 copies
                              of h and h * rstd); the add needs no pass of its own either way
    swiglu_linear(gu, W)      y = (silu(g) * u) W^T, saves gu (plain also: silu(g), silu(g) * u)

For Qwen2.5-1.5B (h 1536, MLP 8960) that is 2 x 8960 instead of 4 x 8960 MLP values per token and
layer. The plain expressions (``rms_norm_reference``, ``swiglu_linear_reference``) are what the
model runs with ``recompute="none"``, and what the tests compare these with. On CUDA (or under
Triton's interpreter) the elementwise parts run as the Triton kernels of triton_kernels.py, one
kernel each way instead of a chain of PyTorch ops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import triton_kernels as tk
from .linear import weight_grad


def rms_norm_reference(x, weight, eps: float, delta=None):
    """``(h, norm(h))`` with h = x + delta, the residual stream after a block's branch is added
    (h = x without delta)."""
    h = x if delta is None else x + delta
    hf = h.float()
    return h, weight * (hf * torch.rsqrt(hf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def swiglu_linear_reference(gate_up, weight):
    gate, up = gate_up.chunk(2, dim=-1)
    return F.linear(F.silu(gate) * up, weight)


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, delta, weight, eps):
        ctx.set_materialize_grads(False)
        if tk.usable(x):
            y, h, rstd = tk.rms_norm_forward(x, weight, eps, delta)
        else:
            h = x if delta is None else x + delta
            hf = h.float()
            rstd = torch.rsqrt(hf.pow(2).mean(-1, keepdim=True) + eps)
            y = weight * (hf * rstd).to(x.dtype)
            rstd = rstd.squeeze(-1)  # [t]
        ctx.save_for_backward(h, weight, rstd)
        ctx.add = delta is not None
        return (h, y) if ctx.add else y  # without delta, h is x itself: the caller keeps it

    @staticmethod
    def backward(ctx, *grads):
        h, weight, rstd = ctx.saved_tensors
        dh, dy = grads if ctx.add else (None, grads[0])
        if dy is None:
            dy = torch.zeros_like(h)
        if tk.usable(h):
            dx, dweight = tk.rms_norm_backward(dy, h, weight, rstd, dh)
        else:
            rstd = rstd.unsqueeze(-1)
            hhat = h.float() * rstd
            dweight = (dy.float() * hhat.to(h.dtype).float()).sum(0).to(weight.dtype)
            dhhat = (dy * weight).float()
            dx = rstd * (dhhat - hhat * (dhhat * hhat).mean(-1, keepdim=True))
            dx = dx.to(h.dtype) if dh is None else (dx + dh.float()).to(h.dtype)
        return dx, (dx if ctx.add else None), dweight, None


class _SwiGLULinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate_up, weight):
        ctx.save_for_backward(gate_up, weight)
        if tk.usable(gate_up):
            return F.linear(tk.swiglu_forward(gate_up), weight)
        gate, up = gate_up.chunk(2, dim=-1)
        return F.linear(F.silu(gate) * up, weight)

    @staticmethod
    def backward(ctx, dy):
        gate_up, weight = ctx.saved_tensors
        if tk.usable(gate_up):
            d_gate_up, act = tk.swiglu_backward(dy @ weight, gate_up)  # act recomputed in the kernel
            return d_gate_up, weight_grad(weight, dy, act)
        gate, up = gate_up.float().chunk(2, dim=-1)
        sig = torch.sigmoid(gate)
        silu = gate * sig
        act = (silu * up).to(gate_up.dtype)  # recomputed: the cheap part
        dweight = weight_grad(weight, dy, act)
        dact = (dy @ weight).float()
        dgate = dact * up * sig * (1 + gate * (1 - sig))
        return torch.cat((dgate, dact * silu), dim=-1).to(gate_up.dtype), dweight


def rms_norm(x, weight, eps: float, delta=None):
    """``(h, norm(h))`` with h = x + delta: the residual add fused into the norm that follows it."""
    if delta is None:
        return x, _RMSNorm.apply(x, None, weight, eps)
    return _RMSNorm.apply(x, delta, weight, eps)


def swiglu_linear(gate_up, weight):
    """The MLP's activation and down projection (this rank's partial output under TP)."""
    return _SwiGLULinear.apply(gate_up, weight)
