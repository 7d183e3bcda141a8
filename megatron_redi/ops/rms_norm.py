"""RMSNorm with the residual add before it fused in: a Triton kernel each way, the PyTorch reference,
and a memory-lean autograd Function.

    rms_norm(x, w, eps, delta) -> (h, norm(h)) with h = x + delta (h = x without delta)

Plain autograd keeps fp32 copies of h and h * rstd; the Function keeps only h and rstd [t] and
recomputes the rest in the backward (selective recompute). ``rms_norm_reference`` is the plain
expression: what the model runs with recompute="none", and what the tests compare with. The
kernels (one program per row, fp32 arithmetic, results in the input dtype):

    rms_norm_forward(x [t, h], w, eps, delta) -> y, h = x + delta, rstd [t] fp32
    rms_norm_backward(dy, h, w, rstd, dh)     -> d h (+ dh when given), dw (fp32 partials summed by torch)
"""

from __future__ import annotations

import torch

from .backends import rows_2d, tl, triton, choose


def rms_norm_reference(x, weight, eps: float, delta=None):
    """``(h, norm(h))`` with h = x + delta, the residual stream after a block's branch is added
    (h = x without delta)."""
    h = x if delta is None else x + delta
    hf = h.float()
    return h, weight * (hf * torch.rsqrt(hf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


if triton is not None:

    @triton.jit
    def _rms_fwd(x_ptr, delta_ptr, h_ptr, w_ptr, y_ptr, rstd_ptr, n, eps, ADD: tl.constexpr,
                 BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)  # row * width may pass 2**31
        cols = tl.arange(0, BLOCK)
        mask = cols < n
        x = tl.load(x_ptr + row * n + cols, mask=mask, other=0.0)
        if ADD:  # the residual add, rounded to the activation dtype as a separate add would be
            x = (x.to(tl.float32) + tl.load(delta_ptr + row * n + cols, mask=mask, other=0.0).to(tl.float32))
            x = x.to(h_ptr.dtype.element_ty)
            tl.store(h_ptr + row * n + cols, x, mask=mask)
        x = x.to(tl.float32)
        rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / n + eps)
        w = tl.load(w_ptr + cols, mask=mask, other=0.0)
        xhat = (x * rstd).to(w.dtype)  # rounded to the activation dtype, as the reference does
        tl.store(y_ptr + row * n + cols, (xhat.to(tl.float32) * w.to(tl.float32)).to(w.dtype), mask=mask)
        tl.store(rstd_ptr + row, rstd)

    @triton.jit
    def _rms_bwd(dy_ptr, x_ptr, w_ptr, rstd_ptr, dh_ptr, dx_ptr, dw_ptr, rows, n, ADD: tl.constexpr,
                 ROWS_PER_PROGRAM: tl.constexpr, BLOCK: tl.constexpr):
        pid = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        mask = cols < n
        w = tl.load(w_ptr + cols, mask=mask, other=0.0)
        dw = tl.zeros((BLOCK,), dtype=tl.float32)
        for i in range(ROWS_PER_PROGRAM):
            row = pid * ROWS_PER_PROGRAM + i
            if row < rows:
                x = tl.load(x_ptr + row * n + cols, mask=mask, other=0.0).to(tl.float32)
                dy = tl.load(dy_ptr + row * n + cols, mask=mask, other=0.0).to(tl.float32)
                rstd = tl.load(rstd_ptr + row)
                xhat = x * rstd
                dw += dy * xhat.to(w.dtype).to(tl.float32)
                dxhat = dy * w.to(tl.float32)
                dx = rstd * (dxhat - xhat * (tl.sum(dxhat * xhat, axis=0) / n))
                if ADD:  # the gradient reaching the residual stream directly
                    dx += tl.load(dh_ptr + row * n + cols, mask=mask, other=0.0).to(tl.float32)
                tl.store(dx_ptr + row * n + cols, dx.to(w.dtype), mask=mask)
        tl.store(dw_ptr + pid * n + cols, dw, mask=mask)


def rms_norm_forward(x, weight, eps: float, delta=None):
    """With ``delta``: the norm of h = x + delta, and h (the residual add fused in)."""
    x2 = rows_2d(x)
    rows, n = x2.shape
    y = torch.empty_like(x2)
    h = x2 if delta is None else torch.empty_like(x2)
    rstd = torch.empty(rows, dtype=torch.float32, device=x.device)
    _rms_fwd[(rows,)](x2, x2 if delta is None else rows_2d(delta), h, weight, y, rstd, n, eps, ADD=delta is not None,
                      BLOCK=triton.next_power_of_2(n))
    return y.view_as(x), h.view_as(x), rstd


def rms_norm_backward(dy, h, weight, rstd, dh=None, rows_per_program: int = 16):
    """d h from the norm's output gradient ``dy``, plus ``dh`` (the gradient h receives directly)."""
    h2, dy2 = rows_2d(h), rows_2d(dy)
    rows, n = h2.shape
    dx = torch.empty_like(h2)
    programs = triton.cdiv(rows, rows_per_program)
    dw_partial = torch.empty(programs, n, dtype=torch.float32, device=h.device)
    _rms_bwd[(programs,)](dy2, h2, weight, rstd, dy2 if dh is None else rows_2d(dh), dx, dw_partial, rows, n,
                          ADD=dh is not None, ROWS_PER_PROGRAM=rows_per_program, BLOCK=triton.next_power_of_2(n))
    return dx.view_as(h), dw_partial.sum(0).to(weight.dtype)


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, delta, weight, eps):
        ctx.set_materialize_grads(False)
        if choose(x.device) == "triton":
            y, h, rstd = rms_norm_forward(x, weight, eps, delta)
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
        if choose(h.device) == "triton":
            dx, dweight = rms_norm_backward(dy, h, weight, rstd, dh)
        else:
            rstd = rstd.unsqueeze(-1)
            hhat = h.float() * rstd
            dweight = (dy.float() * hhat.to(h.dtype).float()).sum(0).to(weight.dtype)
            dhhat = (dy * weight).float()
            dx = rstd * (dhhat - hhat * (dhhat * hhat).mean(-1, keepdim=True))
            dx = dx.to(h.dtype) if dh is None else (dx + dh.float()).to(h.dtype)
        return dx, (dx if ctx.add else None), dweight, None


def rms_norm(x, weight, eps: float, delta=None):
    """``(h, norm(h))`` with h = x + delta: the residual add fused into the norm that follows it."""
    if delta is None:
        return x, _RMSNorm.apply(x, None, weight, eps)
    return _RMSNorm.apply(x, delta, weight, eps)
