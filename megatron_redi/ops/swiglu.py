"""The MLP's SwiGLU activation fused with its down projection, memory-lean: a Triton kernel each way,
the PyTorch reference, and the autograd Function.

    swiglu_linear(gu, W) -> (silu(g) * u) W^T       gu = [gate | up], the gate/up GEMM's output

Plain autograd keeps silu(g) and silu(g) * u besides gu; the Function keeps only gu and
recomputes the activation in the backward (2 instead of 4 MLP-wide values per token and layer).
The down projection's weight gradient goes through ``wgrad.weight_grad`` (into the trainer's fp32
main_grad). Kernels (one program per row and block of columns, fp32 arithmetic):

    swiglu_forward(gate_up [t, 2f])     -> silu(gate) * up            [t, f]
    swiglu_backward(dact [t, f], gate_up) -> d gate_up [t, 2f], recomputed act [t, f]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .backends import rows_2d, tl, triton, choose
from .wgrad import weight_grad


def swiglu_linear_reference(gate_up, weight):
    gate, up = gate_up.chunk(2, dim=-1)
    return F.linear(F.silu(gate) * up, weight)


if triton is not None:

    @triton.jit
    def _swiglu_fwd(gu_ptr, act_ptr, f, BLOCK: tl.constexpr):
        row, block = tl.program_id(0).to(tl.int64), tl.program_id(1)
        cols = block * BLOCK + tl.arange(0, BLOCK)
        mask = cols < f
        gate = tl.load(gu_ptr + row * 2 * f + cols, mask=mask, other=0.0).to(tl.float32)
        up = tl.load(gu_ptr + row * 2 * f + f + cols, mask=mask, other=0.0).to(tl.float32)
        act = gate * tl.sigmoid(gate) * up
        tl.store(act_ptr + row * f + cols, act.to(act_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _swiglu_bwd(dact_ptr, gu_ptr, dgu_ptr, act_ptr, f, BLOCK: tl.constexpr):
        row, block = tl.program_id(0).to(tl.int64), tl.program_id(1)
        cols = block * BLOCK + tl.arange(0, BLOCK)
        mask = cols < f
        gate = tl.load(gu_ptr + row * 2 * f + cols, mask=mask, other=0.0).to(tl.float32)
        up = tl.load(gu_ptr + row * 2 * f + f + cols, mask=mask, other=0.0).to(tl.float32)
        dact = tl.load(dact_ptr + row * f + cols, mask=mask, other=0.0).to(tl.float32)
        sig = tl.sigmoid(gate)
        silu = gate * sig
        out_ty = dgu_ptr.dtype.element_ty
        tl.store(dgu_ptr + row * 2 * f + cols, (dact * up * sig * (1 + gate * (1 - sig))).to(out_ty), mask=mask)
        tl.store(dgu_ptr + row * 2 * f + f + cols, (dact * silu).to(out_ty), mask=mask)
        tl.store(act_ptr + row * f + cols, (silu * up).to(out_ty), mask=mask)


SWIGLU_BLOCK = 1024


def swiglu_forward(gate_up):
    gu = rows_2d(gate_up)
    rows, f = gu.shape[0], gu.shape[1] // 2
    act = torch.empty(rows, f, dtype=gu.dtype, device=gu.device)
    _swiglu_fwd[(rows, triton.cdiv(f, SWIGLU_BLOCK))](gu, act, f, BLOCK=SWIGLU_BLOCK)
    return act.view(*gate_up.shape[:-1], f)


def swiglu_backward(dact, gate_up):
    gu, d = rows_2d(gate_up), rows_2d(dact)
    rows, f = gu.shape[0], gu.shape[1] // 2
    dgu, act = torch.empty_like(gu), torch.empty(rows, f, dtype=gu.dtype, device=gu.device)
    _swiglu_bwd[(rows, triton.cdiv(f, SWIGLU_BLOCK))](d, gu, dgu, act, f, BLOCK=SWIGLU_BLOCK)
    return dgu.view_as(gate_up), act.view(*gate_up.shape[:-1], f)


class _SwiGLULinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate_up, weight):
        ctx.save_for_backward(gate_up, weight)
        if choose(gate_up.device) == "triton":
            return F.linear(swiglu_forward(gate_up), weight)
        gate, up = gate_up.chunk(2, dim=-1)
        return F.linear(F.silu(gate) * up, weight)

    @staticmethod
    def backward(ctx, dy):
        gate_up, weight = ctx.saved_tensors
        if choose(gate_up.device) == "triton":
            d_gate_up, act = swiglu_backward(dy @ weight, gate_up)  # act recomputed in the kernel
            return d_gate_up, weight_grad(weight, dy, act)
        gate, up = gate_up.float().chunk(2, dim=-1)
        sig = torch.sigmoid(gate)
        silu = gate * sig
        act = (silu * up).to(gate_up.dtype)  # recomputed: the cheap part
        dweight = weight_grad(weight, dy, act)
        dact = (dy @ weight).float()
        dgate = dact * up * sig * (1 + gate * (1 - sig))
        return torch.cat((dgate, dact * silu), dim=-1).to(gate_up.dtype), dweight


def swiglu_linear(gate_up, weight):
    """The MLP's activation and down projection (this rank's partial output under TP)."""
    return _SwiGLULinear.apply(gate_up, weight)
