"""The fused QKV projection's output taken apart into rotated q and k and a contiguous v: a Triton
kernel each way, the PyTorch reference, and the autograd Function.

    split_qkv_rotary(qkv [t, g, j + 2, hd], cos, sin [t, hd]) -> q [t, g j, hd], k, v [t, g, hd]

(per KV group g: j query heads, its key, its value; model/rope.py makes cos and sin). The kernel
reads qkv once, rotates q and k and copies v, and keeps only cos and sin for the backward, where
the reference spends a copy of q, a copy of v and about ten elementwise fp32 passes. The rotation
pairs dimension i with i + hd/2 (the "rotate half" convention of the HF Qwen2 and Llama
checkpoints), in fp32 whatever the activation dtype. Kernels:

    qkv_rotary_forward(qkv, cos, sin)         -> q, k, v (q and k rotated, v copied)
    qkv_rotary_backward(dq, dk, dv, cos, sin) -> d qkv, the inverse rotation
"""

from __future__ import annotations

import torch

from .backends import tl, triton, choose


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


if triton is not None:

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


class _SplitQKVRotary(torch.autograd.Function):
    @staticmethod
    def forward(ctx, qkv, cos, sin):
        ctx.save_for_backward(cos, sin)
        return qkv_rotary_forward(qkv, cos, sin)

    @staticmethod
    def backward(ctx, dq, dk, dv):
        cos, sin = ctx.saved_tensors
        return qkv_rotary_backward(dq, dk, dv, cos, sin), None, None


def split_qkv_rotary(qkv, cos, sin):
    if choose(qkv.device) == "triton":
        return _SplitQKVRotary.apply(qkv, cos, sin)
    return split_qkv_rotary_reference(qkv, cos, sin)
