"""Which kernel backend an op runs: the one choice of every op in ops/ (and of the log-prob head).

    choose(device, offered, prefer)   "cuda-extension", "triton" or "pytorch": ``prefer`` when given
                                      (it must be offered and present), else the first of
                                      ``offered`` (the op's own, fastest first) present here:
        cuda-extension   the compiled extension of csrc/ (built by setup.py where CUDA is present),
                         on a CUDA device
        triton           Triton importable, on a CUDA device or under its CPU interpreter
                         (TRITON_INTERPRET=1, what the tests use), and not switched off by
                         MEGATRON_REDI_TRITON=0 (which an explicit ``prefer`` overrides)
        pytorch          always: every op's reference
    cuda_extension()                  the extension module, or None

The environment is read at each call, never at import, so a switch set by a test or a launcher
after the package is imported still holds. With MEGATRON_REDI_TRITON=0 every op runs its CUDA
kernel where it has one, else its PyTorch reference. The import of this module, and so of every
op, cannot fail on a CPU-only install. (Whether an op runs as a memory-lean autograd Function at
all is the model's recompute choice, ``recompute_elementwise``, not a backend.)
"""

from __future__ import annotations

import functools
import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: every op keeps to its PyTorch reference
    triton = tl = None

TRITON_AVAILABLE = triton is not None


BACKENDS = ("cuda-extension", "triton", "pytorch")


def _present(backend: str, device: torch.device) -> bool:
    if backend == "cuda-extension":
        return device.type == "cuda" and cuda_extension() is not None
    if backend == "triton":
        return TRITON_AVAILABLE and (device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1")
    return backend == "pytorch"


def choose(device: torch.device, offered: tuple[str, ...] = ("triton", "pytorch"), prefer: str | None = None) -> str:
    device = torch.device(device)
    if prefer is not None:
        if prefer not in offered or not _present(prefer, device):
            raise RuntimeError(f"kernels {prefer!r} are not available here (on {device}; this op offers "
                               f"{', '.join(offered)})")
        return prefer
    switched_off = os.environ.get("MEGATRON_REDI_TRITON", "1") == "0"
    return next(b for b in offered if _present(b, device) and not (b == "triton" and switched_off))


def available(device: torch.device, offered: tuple[str, ...] = BACKENDS) -> list[str]:
    """The backends of ``offered`` present on ``device`` (benchmarks list them)."""
    return [b for b in offered if _present(b, torch.device(device))]


@functools.cache
def cuda_extension():
    try:
        from megatron_redi import _logprob_cuda
    except ImportError:
        return None
    return _logprob_cuda


def rows_2d(t: torch.Tensor) -> torch.Tensor:
    """``[..., n]`` as contiguous ``[rows, n]``: the layout the row-wise Triton kernels index."""
    return t.reshape(-1, t.shape[-1]).contiguous()
