"""The AdamW update over flat fp32 buffers, returning the squared norm of the update.

    adamw_update(p, g, m, v, lr, betas, eps, weight_decay, step, grad_scale=1.0, out=None)
        -> sum(update**2)  (0-dim fp32)

updates ``p``, ``m`` and ``v`` in place from the gradient ``grad_scale * g`` (gradient clipping),
with ``update = lr * (m_hat / (sqrt(v_hat) + eps) + weight_decay * p)`` (decoupled decay, as
torch.optim.AdamW), and writes the new ``p`` into ``out`` (the model's bf16 copy) when given. The
norm of the update is the paper's "gradient step size", so it is computed in the same pass rather
than from a copy of the weights.

Two implementations of one contract: ``adamw_reference``, plain PyTorch in chunks (bounded
temporaries; what CPU runs and what the tests compare with), and a Triton kernel that reads
p, g, m, v once and writes p, m, v and the bf16 copy once (30 bytes a parameter, memory-bound; the
chunked reference and a separate copy take several times longer, docs/performance.md), each program
also writing its block's partial sum of squares.
"""

from __future__ import annotations

import torch

from .backends import tl, triton, choose

CHUNK = 1 << 24  # elements per reference chunk: bounds its temporaries
BLOCK = 4096  # elements per Triton program


def adamw_reference(p, g, m, v, lr, betas, eps, weight_decay, step, grad_scale=1.0, out=None) -> torch.Tensor:
    b1, b2 = betas
    bc1, bc2 = 1 - b1 ** step, 1 - b2 ** step
    sq = torch.zeros((), dtype=torch.float32, device=p.device)
    for s in range(0, p.numel(), CHUNK):
        pc, gc, mc, vc = (t[s:s + CHUNK] for t in (p, g, m, v))
        gc = gc * grad_scale if grad_scale != 1.0 else gc
        mc.mul_(b1).add_(gc, alpha=1 - b1)
        vc.mul_(b2).addcmul_(gc, gc, value=1 - b2)
        update = (mc / bc1).div_(vc.div(bc2).sqrt_().add_(eps)).mul_(lr)
        if weight_decay:
            update.add_(pc, alpha=lr * weight_decay)
        pc.sub_(update)
        sq += update.square().sum()
        if out is not None:
            out[s:s + CHUNK].copy_(pc)
    return sq


if triton is not None:

    @triton.jit
    def _adamw(p_ptr, g_ptr, m_ptr, v_ptr, sq_ptr, out_ptr, n, lr, b1, b2, eps, weight_decay, bc1, bc2,
               grad_scale, HAS_OUT: tl.constexpr, BLOCK: tl.constexpr):
        pid = tl.program_id(0).to(tl.int64)  # 7 B parameters pass 2**31
        offs = pid * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        p = tl.load(p_ptr + offs, mask=mask, other=0.0)
        g = grad_scale * tl.load(g_ptr + offs, mask=mask, other=0.0)
        m = b1 * tl.load(m_ptr + offs, mask=mask, other=0.0) + (1 - b1) * g
        v = b2 * tl.load(v_ptr + offs, mask=mask, other=0.0) + (1 - b2) * g * g
        update = lr * ((m / bc1) / (tl.sqrt(v / bc2) + eps) + weight_decay * p)  # 0 where masked
        tl.store(p_ptr + offs, p - update, mask=mask)
        if HAS_OUT:
            tl.store(out_ptr + offs, (p - update).to(out_ptr.dtype.element_ty, fp_downcast_rounding="rtne"), mask=mask)
        tl.store(m_ptr + offs, m, mask=mask)
        tl.store(v_ptr + offs, v, mask=mask)
        tl.store(sq_ptr + pid, tl.sum(update * update, axis=0))


def adamw_triton(p, g, m, v, lr, betas, eps, weight_decay, step, grad_scale=1.0, out=None) -> torch.Tensor:
    b1, b2 = betas
    programs = triton.cdiv(p.numel(), BLOCK)
    partial = torch.empty(programs, dtype=torch.float32, device=p.device)
    if programs:
        _adamw[(programs,)](p, g, m, v, partial, p if out is None else out, p.numel(), lr, b1, b2, eps,
                            weight_decay, 1 - b1 ** step, 1 - b2 ** step, float(grad_scale),
                            HAS_OUT=out is not None, BLOCK=BLOCK)
    return partial.sum()


def adamw_update(p, g, m, v, lr, betas, eps, weight_decay, step, grad_scale=1.0, out=None) -> torch.Tensor:
    """The Triton kernel where it runs (CUDA, or the interpreter in tests), else the reference."""
    fn = adamw_triton if choose(p.device) == "triton" else adamw_reference
    return fn(p, g, m, v, lr, betas, eps, weight_decay, step, grad_scale, out)
