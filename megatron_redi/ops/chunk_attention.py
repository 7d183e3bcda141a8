"""Causal attention of a chunk of a sequence's queries over the sequence's keys up to the chunk's end.

Context parallelism gives each rank chunks from the middle of sequences (parallel/context.py): the
chunk's m queries are the last m of the n keys, so the causal mask is aligned to the bottom right.
SDPA's ``is_causal`` aligns it to the top left, and a bottom-right mask (``causal_lower_right``) is
materialised on CPU as an m x n tensor, O(L^2 / cp) bytes a layer: what context parallelism is
there to avoid. So the attention is taken in two parts, as ring attention does:

    the keys before the chunk   every query sees every key          (no mask)
    the chunk's own keys        a square causal block              (is_causal)

each with its log-sum-exp, merged by those weights; the backward runs each part's backward with the
merged output and log-sum-exp, which gives that part's exact share of dq, dk, dv. It calls the CPU
flash kernel that SDPA itself dispatches to on CPU; on CUDA, SDPA's own lower-right path (flash
attention) is used, and context parallelism prefers the varlen backend anyway (model/attention.py).

Layout: ``q [1, nh, m, hd]``, ``k, v [1, nkv, n, hd]`` with n >= m (GQA: nh a multiple of nkv).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right

_flash_cpu = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
_flash_cpu_backward = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward


def chunk_attention_reference(q, k, v) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(q.shape[2], k.shape[2]),
                                          enable_gqa=True)


class _TwoPartAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v):
        before = k.shape[2] - q.shape[2]
        o1, lse1 = _flash_cpu(q, k[:, :, :before], v[:, :, :before], 0.0, False)
        o2, lse2 = _flash_cpu(q, k[:, :, before:], v[:, :, before:], 0.0, True)
        lse = torch.logaddexp(lse1, lse2)  # [1, nh, m]
        out = o1 * torch.exp(lse1 - lse).unsqueeze(-1) + o2 * torch.exp(lse2 - lse).unsqueeze(-1)
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad):
        q, k, v, out, lse = ctx.saved_tensors
        before = k.shape[2] - q.shape[2]
        grad = grad.contiguous()
        dq1, dk1, dv1 = _flash_cpu_backward(grad, q, k[:, :, :before], v[:, :, :before], out, lse, 0.0, False)
        dq2, dk2, dv2 = _flash_cpu_backward(grad, q, k[:, :, before:], v[:, :, before:], out, lse, 0.0, True)
        return dq1 + dq2, torch.cat((dk1, dk2), dim=2), torch.cat((dv1, dv2), dim=2)


def chunk_attention(q, k, v) -> torch.Tensor:
    m, n = q.shape[2], k.shape[2]
    if m == n:  # the sequence's first chunk
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    if q.device.type != "cpu":
        return chunk_attention_reference(q, k, v)  # CUDA: SDPA takes its flash kernel, no mask built
    return _TwoPartAttention.apply(q, k, v)  # strided views: no copy of the keys kept
