"""The elementwise and reduction kernels of the fused log-prob head, each with its PyTorch reference.

Kernels acting on one chunk of logits ``[c, Vl]`` (c response tokens, Vl = the rank's vocab shard,
fp32 or bf16) with the chunk's ``targets [c]`` already shifted into the shard
(``local = target - vocab_start``; outside [0, Vl) means another rank owns it):

    row_stats(logits, local)              -> max [c], sum exp(logit - max) [c], target logit [c]
                                             (fp32; target logit 0 where another rank owns it)
    dlogits(logits, lse, local, coeff)    -> coeff * (onehot - softmax), in the GEMM dtype
    segment_sum(values, index, n)         -> out[n] = sum of values[i] with index[i] == n (fp32)
    wgrad_accumulate(acc, dlogits, h)     -> acc += dlogits^T h, accumulated in fp32 (wgrad.py)

``KERNELS`` picks by ops/backends.py's one rule (``choose``): the CUDA extension (csrc/), else the
Triton kernels below (row_stats and dlogits; the segment sum and the weight gradient stay in
PyTorch), else the references, which are exact, are what CPU runs, and are what the tests compare
the others with.
The Triton kernels: one program per row (row_stats, an online max and sum-exp over the row) or per
(row, block of columns) (dlogits).
"""

from __future__ import annotations

import torch

from .backends import BACKENDS, available, choose, cuda_extension, tl, triton
from .wgrad import wgrad_accumulate_reference


# ---- PyTorch references -----------------------------------------------------------------------

def row_stats_reference(logits, local):
    x = logits.float()
    row_max = x.max(dim=-1).values
    sum_exp = torch.exp(x - row_max[:, None]).sum(dim=-1)
    owned = (local >= 0) & (local < x.shape[1])
    target = x.gather(1, local.clamp(0, x.shape[1] - 1)[:, None]).squeeze(1)
    return row_max, sum_exp, torch.where(owned, target, torch.zeros_like(target))


def dlogits_reference(logits, lse, local, coeff, out_dtype):
    grad = torch.exp(logits.float() - lse[:, None]).mul_(-coeff[:, None])
    owned = (local >= 0) & (local < grad.shape[1])
    # the onehot term, added only where this rank owns the target (no host sync: no nonzero())
    grad.scatter_add_(1, local.clamp(0, grad.shape[1] - 1)[:, None], (coeff * owned)[:, None])
    return grad.to(out_dtype)


def segment_sum_reference(values, index, n):
    return torch.zeros(n, dtype=torch.float32, device=values.device).index_add_(0, index, values.float())


# ---- Triton -----------------------------------------------------------------------------------

if triton is not None:

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


# ---- the choice -------------------------------------------------------------------------------

class _Reference:
    name = "pytorch"
    row_stats = staticmethod(row_stats_reference)
    dlogits = staticmethod(dlogits_reference)
    segment_sum = staticmethod(segment_sum_reference)
    wgrad_accumulate = staticmethod(wgrad_accumulate_reference)


class _Triton(_Reference):
    name = "triton"
    row_stats = staticmethod(row_stats)
    dlogits = staticmethod(dlogits)


def _cuda_kernels():
    ext = cuda_extension()
    if ext is None:
        return None

    class _Cuda:
        name = "cuda-extension"
        row_stats = staticmethod(ext.row_stats)
        segment_sum = staticmethod(ext.segment_sum)
        wgrad_accumulate = staticmethod(ext.wgrad_accumulate)

        @staticmethod
        def dlogits(logits, lse, local, coeff, out_dtype):  # in place when the dtypes agree
            out = logits if logits.dtype == out_dtype else torch.empty_like(logits, dtype=out_dtype)
            return ext.dlogits(logits, lse, local, coeff, out)

    return _Cuda


class KernelChoice:
    """The head's kernels for a device, by ops/backends.py's rule; ``prefer`` forces "pytorch",
    "triton" or "cuda-extension" (benchmarks, tests)."""

    def for_device(self, device: torch.device, prefer: str | None = None):
        name = choose(device, BACKENDS, prefer)
        return {"cuda-extension": _cuda_kernels, "triton": lambda: _Triton, "pytorch": lambda: _Reference}[name]()

    def available(self, device: torch.device) -> list[str]:
        return available(device)[::-1]  # pytorch first: the benchmarks' baseline


KERNELS = KernelChoice()
