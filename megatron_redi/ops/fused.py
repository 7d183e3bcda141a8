"""Memory-lean elementwise ops of the decoder: keep the GEMM outputs, recompute the cheap parts.

Plain autograd keeps every intermediate of an elementwise chain. These Functions keep only what
the backward cannot cheaply rebuild, and recompute the rest:

    rms_norm(x, w)            saves x and rstd [t]           (plain: fp32 copies of x and x * rstd)
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


def rms_norm_reference(x, weight, eps: float):
    xf = x.float()
    return weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def swiglu_linear_reference(gate_up, weight):
    gate, up = gate_up.chunk(2, dim=-1)
    return F.linear(F.silu(gate) * up, weight)


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps):
        if tk.usable(x):
            y, rstd = tk.rms_norm_forward(x, weight, eps)
            ctx.save_for_backward(x, weight, rstd)
            return y
        xf = x.float()
        rstd = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
        ctx.save_for_backward(x, weight, rstd.squeeze(-1))  # rstd [t]
        return weight * (xf * rstd).to(x.dtype)

    @staticmethod
    def backward(ctx, dy):
        x, weight, rstd = ctx.saved_tensors
        if tk.usable(x):
            dx, dweight = tk.rms_norm_backward(dy, x, weight, rstd)
            return dx, dweight, None
        rstd = rstd.unsqueeze(-1)
        xhat = x.float() * rstd
        dweight = (dy.float() * xhat.to(x.dtype).float()).sum(0)
        dxhat = (dy * weight).float()
        dx = rstd * (dxhat - xhat * (dxhat * xhat).mean(-1, keepdim=True))
        return dx.to(x.dtype), dweight.to(weight.dtype), None


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


def rms_norm(x, weight, eps: float):
    return _RMSNorm.apply(x, weight, eps)


def swiglu_linear(gate_up, weight):
    """The MLP's activation and down projection (this rank's partial output under TP)."""
    return _SwiGLULinear.apply(gate_up, weight)
