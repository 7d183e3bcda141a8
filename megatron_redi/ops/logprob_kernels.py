"""The elementwise and reduction kernels of the fused log-prob head, each with its PyTorch reference.

Four kernels act on one chunk of logits ``[c, Vl]`` (c response tokens, Vl = the rank's vocab
shard, fp32 or bf16) with the chunk's ``targets [c]`` already shifted into the shard
(``local = target - vocab_start``; outside [0, Vl) means another rank owns it):

    row_stats(logits, local)              -> max [c], sum exp(logit - max) [c], target logit [c]
                                             (fp32; target logit 0 where another rank owns it)
    dlogits(logits, lse, local, coeff)    -> coeff * (onehot - softmax), in the GEMM dtype
    segment_sum(values, index, n)         -> out[n] = sum of values[i] with index[i] == n (fp32)
    wgrad_accumulate(acc, dlogits, h)     -> acc += dlogits^T h, accumulated in fp32

``KERNELS`` picks, once, for CUDA tensors: the CUDA extension (csrc/, built by setup.py where CUDA
is present), else Triton's kernels (ops/triton_kernels.py: row_stats and dlogits; the segment sum
and the weight gradient stay in PyTorch), else the references below, which are exact, are what
CPU runs, and are what the tests compare the others with.
"""

from __future__ import annotations

import torch


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


def wgrad_accumulate_reference(acc, dlogits, h):
    if dlogits.dtype == torch.float32 or dlogits.device.type != "cuda":
        acc.addmm_(dlogits.t().float(), h.float())
    else:  # bf16 GEMM (fp32 inside), rounded once per chunk before the fp32 sum
        acc.add_(dlogits.t() @ h)


class _Reference:
    name = "pytorch"
    row_stats = staticmethod(row_stats_reference)
    dlogits = staticmethod(dlogits_reference)
    segment_sum = staticmethod(segment_sum_reference)
    wgrad_accumulate = staticmethod(wgrad_accumulate_reference)


def _cuda_extension():
    try:
        from megatron_redi import _logprob_cuda  # built by setup.py when CUDA is present
    except ImportError:
        return None

    class _Cuda:
        name = "cuda-extension"
        row_stats = staticmethod(_logprob_cuda.row_stats)
        segment_sum = staticmethod(_logprob_cuda.segment_sum)
        wgrad_accumulate = staticmethod(_logprob_cuda.wgrad_accumulate)

        @staticmethod
        def dlogits(logits, lse, local, coeff, out_dtype):  # in place when the dtypes agree
            out = logits if logits.dtype == out_dtype else torch.empty_like(logits, dtype=out_dtype)
            return _logprob_cuda.dlogits(logits, lse, local, coeff, out)

    return _Cuda


def _triton():
    from . import triton_kernels as tk

    if not tk.AVAILABLE:
        return None

    class _Triton(_Reference):
        name = "triton"
        row_stats = staticmethod(tk.row_stats)
        dlogits = staticmethod(tk.dlogits)

    return _Triton


class KernelChoice:
    """One availability check: the fastest kernels present for a device."""

    def __init__(self):
        self._cuda = None

    def for_device(self, device: torch.device, prefer: str | None = None):
        if prefer == "pytorch":
            return _Reference
        if prefer == "triton" and device.type != "cuda":  # Triton's CPU interpreter (tests)
            return _triton() or _Reference
        if device.type != "cuda":
            return _Reference
        if self._cuda is None:
            self._cuda = {"cuda-extension": _cuda_extension(), "triton": _triton()}
        if prefer is not None:
            if self._cuda.get(prefer) is None:
                raise RuntimeError(f"log-prob kernels {prefer!r} are not available here")
            return self._cuda[prefer]
        return self._cuda["cuda-extension"] or self._cuda["triton"] or _Reference

    def available(self, device: torch.device) -> list[str]:
        names = ["pytorch"]
        if device.type == "cuda":
            self.for_device(device)
            names += [k for k, v in self._cuda.items() if v is not None]
        return names


KERNELS = KernelChoice()
