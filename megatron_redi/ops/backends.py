"""Which kernel backends this process can use: the one availability check of every op in ops/.

    triton_usable(t)   Triton runs on ``t``: Triton is importable, not switched off, and ``t`` is
                       on a CUDA device or Triton's CPU interpreter is on (TRITON_INTERPRET=1, what
                       the tests use)
    cuda_extension()   the compiled extension of csrc/ (built by setup.py where CUDA is present),
                       or None

MEGATRON_REDI_TRITON=0 switches every Triton kernel off (norms, SwiGLU, RoPE, the log-prob head,
AdamW): each op then runs its CUDA kernel where it has one, else its PyTorch reference. The import
of this module, and so of every op, cannot fail on a CPU-only install.
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


def triton_enabled() -> bool:
    return TRITON_AVAILABLE and os.environ.get("MEGATRON_REDI_TRITON", "1") != "0"


def triton_usable(t: torch.Tensor) -> bool:
    return triton_enabled() and (t.is_cuda or os.environ.get("TRITON_INTERPRET") == "1")


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
