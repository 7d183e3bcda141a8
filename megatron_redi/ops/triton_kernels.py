"""Triton kernels for the decoder's elementwise work; their PyTorch references are in fused.py.

    rms_norm_forward(x [t, h], w, eps, delta) -> y, h = x + delta (x without delta), rstd [t] fp32
    rms_norm_backward(dy, h, w, rstd, dh)     -> d h (+ dh when given), dw (fp32 partials summed
                                                 by torch)
    swiglu_forward(gate_up [t, 2f])           -> silu(gate) * up            [t, f]
    swiglu_backward(dact [t, f], gate_up)     -> d gate_up [t, 2f], recomputed act [t, f]

the attention's input (reference: model/rope.py's split_qkv_rotary_reference):

    qkv_rotary_forward(qkv [t, g, j+2, hd], cos, sin [t, hd])  -> q [t, g j, hd], k, v [t, g, hd]
                                              (q and k rotated, v copied: one pass over qkv)
    qkv_rotary_backward(dq, dk, dv, cos, sin) -> d qkv, the inverse rotation

and two of the log-prob head's (references in logprob_kernels.py, contracts as csrc/'s):

    row_stats(logits [c, V], local [c])       -> max, sum exp(x - max), target logit   [c] fp32
    dlogits(logits, lse, local, coeff, dtype) -> coeff * (onehot - softmax)             [c, V]

One program per row (norms) or per (row, column block) (SwiGLU); all arithmetic in fp32, results
stored in the input dtype. ``usable`` is the one availability check: Triton importable, not
switched off (MEGATRON_REDI_TRITON=0), and either a CUDA device or Triton's CPU interpreter
(TRITON_INTERPRET=1, which the tests use).
"""

from __future__ import annotations

import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: fused.py keeps to its PyTorch references
    triton = None

AVAILABLE = triton is not None


def usable(t: torch.Tensor) -> bool:
    if not AVAILABLE or os.environ.get("MEGATRON_REDI_TRITON", "1") == "0":
        return False
    return t.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"


if AVAILABLE:

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

    @triton.jit
    def _qkv_rotary(src_ptr, cos_ptr, sin_ptr, q_ptr, k_ptr, v_ptr, groups, qpg, half,
                    HEADS: tl.constexpr, HALF: tl.constexpr, BACKWARD: tl.constexpr):
        """One program per (token, KV group): its qpg query heads, its key and its value.
        Forward: qkv -> q, k, v. Backward: dq, dk, dv -> d qkv (rotation by the negative angle).
        HEADS and HALF are qpg + 2 and hd / 2 rounded up to powers of two."""
        tok, g = tl.program_id(0).to(tl.int64), tl.program_id(1)
        j = tl.arange(0, HEADS)[:, None]  # head within the group: qpg queries, then k, then v
        d = tl.arange(0, HALF)[None, :]
        in_row = d < half
        c = tl.load(cos_ptr + tok * 2 * half + d, mask=in_row, other=0.0)  # cos = cat(c, c); so sin
        s = tl.load(sin_ptr + tok * 2 * half + d, mask=in_row, other=0.0)
        is_q, is_k, is_v = (j < qpg) & in_row, (j == qpg) & in_row, (j == qpg + 1) & in_row
        in_group = (j < qpg + 2) & in_row
        hd = 2 * half
        packed = src_ptr + (tok * groups + g) * (qpg + 2) * hd + j * hd + d  # [HEADS, HALF]
        q_at = q_ptr + (tok * groups * qpg + g * qpg + j) * hd + d
        k_at = k_ptr + (tok * groups + g) * hd + d + 0 * j  # broadcast to [HEADS, HALF]
        v_at = v_ptr + (tok * groups + g) * hd + d + 0 * j
        if BACKWARD:
            x1 = (tl.load(q_at, mask=is_q, other=0.0) + tl.load(k_at, mask=is_k, other=0.0)
                  + tl.load(v_at, mask=is_v, other=0.0)).to(tl.float32)
            x2 = (tl.load(q_at + half, mask=is_q, other=0.0) + tl.load(k_at + half, mask=is_k, other=0.0)
                  + tl.load(v_at + half, mask=is_v, other=0.0)).to(tl.float32)
            s = -s
        else:
            x1 = tl.load(packed, mask=in_group, other=0.0).to(tl.float32)
            x2 = tl.load(packed + half, mask=in_group, other=0.0).to(tl.float32)
        y1 = tl.where(j == qpg + 1, x1, x1 * c - x2 * s)
        y2 = tl.where(j == qpg + 1, x2, x2 * c + x1 * s)
        if BACKWARD:
            out_ty = src_ptr.dtype.element_ty
            tl.store(packed, y1.to(out_ty), mask=in_group)
            tl.store(packed + half, y2.to(out_ty), mask=in_group)
        else:
            out_ty = q_ptr.dtype.element_ty
            tl.store(q_at, y1.to(out_ty), mask=is_q)
            tl.store(q_at + half, y2.to(out_ty), mask=is_q)
            tl.store(k_at, y1.to(out_ty), mask=is_k)
            tl.store(k_at + half, y2.to(out_ty), mask=is_k)
            tl.store(v_at, y1.to(out_ty), mask=is_v)
            tl.store(v_at + half, y2.to(out_ty), mask=is_v)

    @triton.jit
    def _row_stats(x_ptr, local_ptr, max_ptr, sum_ptr, target_ptr, vocab, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)  # row * width may pass 2**31
        m = -float("inf")
        s = 0.0
        for start in range(0, vocab, BLOCK):  # online max and sum-exp over the row
            cols = start + tl.arange(0, BLOCK)
            x = tl.load(x_ptr + row * vocab + cols, mask=cols < vocab, other=-float("inf")).to(tl.float32)
            m_new = tl.maximum(m, tl.max(x, axis=0))
            s = s * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new), axis=0)
            m = m_new
        t = tl.load(local_ptr + row)
        owned = (t >= 0) & (t < vocab)
        target = tl.load(x_ptr + row * vocab + tl.where(owned, t, 0)).to(tl.float32)
        tl.store(max_ptr + row, m)
        tl.store(sum_ptr + row, s)
        tl.store(target_ptr + row, tl.where(owned, target, 0.0))

    @triton.jit
    def _dlogits(x_ptr, lse_ptr, local_ptr, coeff_ptr, out_ptr, vocab, BLOCK: tl.constexpr):
        row, block = tl.program_id(0).to(tl.int64), tl.program_id(1)
        cols = block * BLOCK + tl.arange(0, BLOCK)
        mask = cols < vocab
        x = tl.load(x_ptr + row * vocab + cols, mask=mask, other=0.0).to(tl.float32)
        c = tl.load(coeff_ptr + row)
        g = -c * tl.exp(x - tl.load(lse_ptr + row))
        g = tl.where(cols == tl.load(local_ptr + row), g + c, g)
        tl.store(out_ptr + row * vocab + cols, g.to(out_ptr.dtype.element_ty), mask=mask)


def row_stats(logits, local):
    rows, vocab = logits.shape
    outs = [torch.empty(rows, dtype=torch.float32, device=logits.device) for _ in range(3)]
    if rows:
        _row_stats[(rows,)](logits, local, *outs, vocab, BLOCK=4096)
    return tuple(outs)


DLOGITS_BLOCK = 4096


def dlogits(logits, lse, local, coeff, out_dtype):
    out = logits if logits.dtype == out_dtype else torch.empty_like(logits, dtype=out_dtype)  # in place if it can
    rows, vocab = logits.shape
    if rows:
        _dlogits[(rows, triton.cdiv(vocab, DLOGITS_BLOCK))](logits, lse, local, coeff, out, vocab, BLOCK=DLOGITS_BLOCK)
    return out


def _2d(t):
    return t.reshape(-1, t.shape[-1]).contiguous()


def rms_norm_forward(x, weight, eps: float, delta=None):
    """With ``delta``: the norm of h = x + delta, and h (the residual add fused in)."""
    x2 = _2d(x)
    rows, n = x2.shape
    y = torch.empty_like(x2)
    h = x2 if delta is None else torch.empty_like(x2)
    rstd = torch.empty(rows, dtype=torch.float32, device=x.device)
    _rms_fwd[(rows,)](x2, x2 if delta is None else _2d(delta), h, weight, y, rstd, n, eps, ADD=delta is not None,
                      BLOCK=triton.next_power_of_2(n))
    return y.view_as(x), h.view_as(x), rstd


def rms_norm_backward(dy, h, weight, rstd, dh=None, rows_per_program: int = 16):
    """d h from the norm's output gradient ``dy``, plus ``dh`` (the gradient h receives directly)."""
    h2, dy2 = _2d(h), _2d(dy)
    rows, n = h2.shape
    dx = torch.empty_like(h2)
    programs = triton.cdiv(rows, rows_per_program)
    dw_partial = torch.empty(programs, n, dtype=torch.float32, device=h.device)
    _rms_bwd[(programs,)](dy2, h2, weight, rstd, dy2 if dh is None else _2d(dh), dx, dw_partial, rows, n,
                          ADD=dh is not None, ROWS_PER_PROGRAM=rows_per_program, BLOCK=triton.next_power_of_2(n))
    return dx.view_as(h), dw_partial.sum(0).to(weight.dtype)


SWIGLU_BLOCK = 1024


def swiglu_forward(gate_up):
    gu = _2d(gate_up)
    rows, f = gu.shape[0], gu.shape[1] // 2
    act = torch.empty(rows, f, dtype=gu.dtype, device=gu.device)
    _swiglu_fwd[(rows, triton.cdiv(f, SWIGLU_BLOCK))](gu, act, f, BLOCK=SWIGLU_BLOCK)
    return act.view(*gate_up.shape[:-1], f)


def swiglu_backward(dact, gate_up):
    gu, d = _2d(gate_up), _2d(dact)
    rows, f = gu.shape[0], gu.shape[1] // 2
    dgu, act = torch.empty_like(gu), torch.empty(rows, f, dtype=gu.dtype, device=gu.device)
    _swiglu_bwd[(rows, triton.cdiv(f, SWIGLU_BLOCK))](d, gu, dgu, act, f, BLOCK=SWIGLU_BLOCK)
    return dgu.view_as(gate_up), act.view(*gate_up.shape[:-1], f)


def _rotary_launch(src, cos, sin, q, k, v, backward: bool):
    t, groups, heads, hd = (q.shape[0], k.shape[1], q.shape[1] // k.shape[1] + 2, q.shape[2])
    if t:
        _qkv_rotary[(t, groups)](src, cos, sin, q, k, v, groups, heads - 2, hd // 2,
                                 HEADS=triton.next_power_of_2(heads), HALF=triton.next_power_of_2(hd // 2),
                                 BACKWARD=backward)


def qkv_rotary_forward(qkv, cos, sin):
    t, groups, heads, hd = qkv.shape
    qkv = qkv.contiguous()
    q = torch.empty(t, groups * (heads - 2), hd, dtype=qkv.dtype, device=qkv.device)
    k, v = (torch.empty(t, groups, hd, dtype=qkv.dtype, device=qkv.device) for _ in range(2))
    _rotary_launch(qkv, cos.contiguous(), sin.contiguous(), q, k, v, backward=False)
    return q, k, v


def qkv_rotary_backward(dq, dk, dv, cos, sin):
    t, groups, hd = dk.shape
    dqkv = torch.empty(t, groups, dq.shape[1] // groups + 2, hd, dtype=dq.dtype, device=dq.device)
    _rotary_launch(dqkv, cos.contiguous(), sin.contiguous(), dq.contiguous(), dk.contiguous(), dv.contiguous(),
                   backward=True)
    return dqkv
