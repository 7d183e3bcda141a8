"""The fused QKV projection's output taken apart into rotated q and k and a contiguous v, with the
per-head RMSNorm of q and k (Qwen3) before the rotation where the model has one: a Triton kernel
each way, the PyTorch reference, and the autograd Function.

    split_qkv_rotary(qkv [t, g, j + 2, hd], cos, sin [t, hd], norms) -> q [t, g j, hd], k, v [t, g, hd]

(per KV group g: j query heads, its key, its value; model/rope.py makes cos and sin; ``norms``:
None, or the q norm's and the k norm's ``[hd]`` weights and eps). The kernel reads qkv once,
normalises and rotates q and k and copies v; it keeps only cos and sin for the backward (and qkv
itself when it normalises, to recompute each head's norm there), where the reference spends a copy of
q, a copy of v and about ten elementwise fp32 passes (twenty with the norms). The rotation pairs
dimension i with i + hd/2 (the "rotate half" convention of the HF Qwen and Llama checkpoints), in fp32
whatever the activation dtype; the norm rounds as ops/rms_norm.py does. Kernels:

    qkv_rotary_forward(qkv, cos, sin, norms)           -> q, k, v (q and k normalised and rotated)
    qkv_rotary_backward(dq, dk, dv, cos, sin, qkv, norms) -> d qkv, and the norms' weight gradients
"""

from __future__ import annotations

import torch

from .backends import tl, triton, choose
from .rms_norm import rms_norm_reference


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x [t, n, hd]`` by the angles of its token; fp32 math, result in x's dtype."""
    xf = x.float()
    x1, x2 = xf.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return (xf * cos[:, None, :] + rotated * sin[:, None, :]).to(x.dtype)


def split_qkv_rotary_reference(qkv, cos, sin, norms=None):
    """``qkv [t, g, j + 2, hd]`` (per KV group: j query heads, its key, its value) ->
    ``q [t, g j, hd]`` and ``k [t, g, hd]`` (normalised by ``norms`` = (q weight, k weight, eps)
    when given) rotated, ``v [t, g, hd]``, all contiguous."""
    t, groups, heads, hd = qkv.shape
    q, k = qkv[:, :, : heads - 2].reshape(t, groups * (heads - 2), hd), qkv[:, :, -2]
    if norms is not None:
        q_weight, k_weight, eps = norms
        q, k = rms_norm_reference(q, q_weight, eps)[1], rms_norm_reference(k, k_weight, eps)[1]
    return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin), qkv[:, :, -1].contiguous()


if triton is not None:

    @triton.jit
    def _qkv_rotary(src_ptr, cos_ptr, sin_ptr, q_ptr, k_ptr, v_ptr, x_ptr, qw_ptr, kw_ptr, dw_ptr, eps,
                    groups, qpg, half, HEADS: tl.constexpr, HALF: tl.constexpr, BACKWARD: tl.constexpr,
                    NORM: tl.constexpr):
        """One program per (token, KV group): its qpg query heads, its key and its value.
        Forward: qkv -> q, k, v. Backward: dq, dk, dv -> d qkv (rotation by the negative angle).
        NORM: q and k heads RMS-normalised before the rotation (weights qw, kw); the backward reads
        the forward's input x again for it and writes the group's weight-gradient partials to dw
        ([tokens, groups, 2, hd] fp32: q's, then k's). HEADS and HALF are qpg + 2 and hd / 2
        rounded up to powers of two."""
        tok, g = tl.program_id(0).to(tl.int64), tl.program_id(1)
        j = tl.arange(0, HEADS)[:, None]  # head within the group: qpg queries, then k, then v
        d = tl.arange(0, HALF)[None, :]
        in_row = d < half
        c = tl.load(cos_ptr + tok * 2 * half + d, mask=in_row, other=0.0)  # cos = cat(c, c); so sin
        s = tl.load(sin_ptr + tok * 2 * half + d, mask=in_row, other=0.0)
        is_q, is_k, is_v = (j < qpg) & in_row, (j == qpg) & in_row, (j == qpg + 1) & in_row
        in_group = (j < qpg + 2) & in_row
        hd = 2 * half
        at = (tok * groups + g) * (qpg + 2) * hd + j * hd + d  # [HEADS, HALF] offsets in qkv
        packed = src_ptr + at
        q_at = q_ptr + (tok * groups * qpg + g * qpg + j) * hd + d
        k_at = k_ptr + (tok * groups + g) * hd + d + 0 * j  # broadcast to [HEADS, HALF]
        v_at = v_ptr + (tok * groups + g) * hd + d + 0 * j
        if BACKWARD:
            out_ty = src_ptr.dtype.element_ty
            x1 = (tl.load(q_at, mask=is_q, other=0.0) + tl.load(k_at, mask=is_k, other=0.0)
                  + tl.load(v_at, mask=is_v, other=0.0)).to(tl.float32)
            x2 = (tl.load(q_at + half, mask=is_q, other=0.0) + tl.load(k_at + half, mask=is_k, other=0.0)
                  + tl.load(v_at + half, mask=is_v, other=0.0)).to(tl.float32)
            s = -s
        else:
            out_ty = q_ptr.dtype.element_ty
            x1 = tl.load(packed, mask=in_group, other=0.0).to(tl.float32)
            x2 = tl.load(packed + half, mask=in_group, other=0.0).to(tl.float32)
        if NORM:  # the weight of each row: q's for the query heads, k's for the key (v: none)
            w1 = tl.where(j < qpg, tl.load(qw_ptr + d, mask=in_row, other=0.0).to(tl.float32),
                          tl.load(kw_ptr + d, mask=in_row, other=0.0).to(tl.float32))
            w2 = tl.where(j < qpg, tl.load(qw_ptr + half + d, mask=in_row, other=0.0).to(tl.float32),
                          tl.load(kw_ptr + half + d, mask=in_row, other=0.0).to(tl.float32))
            if not BACKWARD:
                rstd = 1.0 / tl.sqrt(tl.sum(x1 * x1 + x2 * x2, axis=1) / hd + eps)[:, None]
                n1 = ((x1 * rstd).to(out_ty).to(tl.float32) * w1).to(out_ty).to(tl.float32)
                n2 = ((x2 * rstd).to(out_ty).to(tl.float32) * w2).to(out_ty).to(tl.float32)
                x1 = tl.where(j == qpg + 1, x1, n1)
                x2 = tl.where(j == qpg + 1, x2, n2)
        y1 = tl.where(j == qpg + 1, x1, x1 * c - x2 * s)
        y2 = tl.where(j == qpg + 1, x2, x2 * c + x1 * s)
        if BACKWARD:
            if NORM:  # y is the gradient of the normalised rows: through the norm, as ops/rms_norm.py
                i1 = tl.load(x_ptr + at, mask=in_group, other=0.0).to(tl.float32)
                i2 = tl.load(x_ptr + at + half, mask=in_group, other=0.0).to(tl.float32)
                rstd = 1.0 / tl.sqrt(tl.sum(i1 * i1 + i2 * i2, axis=1) / hd + eps)[:, None]
                h1, h2 = i1 * rstd, i2 * rstd
                dw1 = y1 * h1.to(out_ty).to(tl.float32)
                dw2 = y2 * h2.to(out_ty).to(tl.float32)
                partial = dw_ptr + (tok * groups + g) * 2 * hd + d
                tl.store(partial, tl.sum(tl.where(is_q, dw1, 0.0), axis=0)[None, :], mask=in_row)
                tl.store(partial + half, tl.sum(tl.where(is_q, dw2, 0.0), axis=0)[None, :], mask=in_row)
                tl.store(partial + hd, tl.sum(tl.where(is_k, dw1, 0.0), axis=0)[None, :], mask=in_row)
                tl.store(partial + hd + half, tl.sum(tl.where(is_k, dw2, 0.0), axis=0)[None, :], mask=in_row)
                g1, g2 = y1 * w1, y2 * w2
                mean = (tl.sum(g1 * h1 + g2 * h2, axis=1) / hd)[:, None]
                y1 = tl.where(j == qpg + 1, y1, rstd * (g1 - h1 * mean))
                y2 = tl.where(j == qpg + 1, y2, rstd * (g2 - h2 * mean))
            tl.store(packed, y1.to(out_ty), mask=in_group)
            tl.store(packed + half, y2.to(out_ty), mask=in_group)
        else:
            tl.store(q_at, y1.to(out_ty), mask=is_q)
            tl.store(q_at + half, y2.to(out_ty), mask=is_q)
            tl.store(k_at, y1.to(out_ty), mask=is_k)
            tl.store(k_at + half, y2.to(out_ty), mask=is_k)
            tl.store(v_at, y1.to(out_ty), mask=is_v)
            tl.store(v_at + half, y2.to(out_ty), mask=is_v)


def _rotary_launch(src, cos, sin, q, k, v, backward: bool, norms=None, x=None, dw=None):
    t, groups, heads, hd = (q.shape[0], k.shape[1], q.shape[1] // k.shape[1] + 2, q.shape[2])
    q_weight, k_weight, eps = norms if norms is not None else (cos, cos, 0.0)  # unread without NORM
    if t:
        _qkv_rotary[(t, groups)](src, cos, sin, q, k, v, src if x is None else x, q_weight, k_weight,
                                 cos if dw is None else dw, eps, groups, heads - 2, hd // 2,
                                 HEADS=triton.next_power_of_2(heads), HALF=triton.next_power_of_2(hd // 2),
                                 BACKWARD=backward, NORM=norms is not None)


def qkv_rotary_forward(qkv, cos, sin, norms=None):
    t, groups, heads, hd = qkv.shape
    qkv = qkv.contiguous()
    q = torch.empty(t, groups * (heads - 2), hd, dtype=qkv.dtype, device=qkv.device)
    k, v = (torch.empty(t, groups, hd, dtype=qkv.dtype, device=qkv.device) for _ in range(2))
    _rotary_launch(qkv, cos.contiguous(), sin.contiguous(), q, k, v, False, norms)
    return q, k, v


def qkv_rotary_backward(dq, dk, dv, cos, sin, qkv=None, norms=None):
    """d qkv, and (with ``norms``, for which ``qkv`` is the forward's input) the gradients of the
    q and k norms' weights (else None, None)."""
    t, groups, hd = dk.shape
    dqkv = torch.empty(t, groups, dq.shape[1] // groups + 2, hd, dtype=dq.dtype, device=dq.device)
    dw = None if norms is None else torch.empty(t, groups, 2, hd, dtype=torch.float32, device=dq.device)
    _rotary_launch(dqkv, cos.contiguous(), sin.contiguous(), dq.contiguous(), dk.contiguous(), dv.contiguous(),
                   True, norms, None if qkv is None else qkv.contiguous(), dw)
    if norms is None:
        return dqkv, None, None
    dw = dw.sum((0, 1)).to(norms[0].dtype)
    return dqkv, dw[0], dw[1]


class _SplitQKVRotary(torch.autograd.Function):
    @staticmethod
    def forward(ctx, qkv, cos, sin, q_weight, k_weight, eps):
        norms = None if q_weight is None else (q_weight, k_weight, eps)
        ctx.eps = eps
        ctx.save_for_backward(cos, sin, *(() if norms is None else (qkv, q_weight, k_weight)))
        return qkv_rotary_forward(qkv, cos, sin, norms)

    @staticmethod
    def backward(ctx, dq, dk, dv):
        cos, sin, *normed = ctx.saved_tensors
        qkv, norms = (normed[0], (normed[1], normed[2], ctx.eps)) if normed else (None, None)
        dqkv, dq_weight, dk_weight = qkv_rotary_backward(dq, dk, dv, cos, sin, qkv, norms)
        return dqkv, None, None, dq_weight, dk_weight, None


def split_qkv_rotary(qkv, cos, sin, norms=None):
    if choose(qkv.device) == "triton":
        q_weight, k_weight, eps = norms if norms is not None else (None, None, 0.0)
        return _SplitQKVRotary.apply(qkv, cos, sin, q_weight, k_weight, eps)
    return split_qkv_rotary_reference(qkv, cos, sin, norms)
