"""Causal attention over a packed micro-batch: no token attends across a sequence boundary.

Layout: ``q [t, nh, hd]``, ``k, v [t, nkv, hd]`` (GQA: nh is a multiple of nkv), output
``[t, nh, hd]``. Two backends, chosen per micro-batch:

- ``sdpa``: ``scaled_dot_product_attention`` called once per sequence, split by the host copy of
  cu_seqlens (no device sync). Exact on CPU (math kernel); on Hopper GPUs PyTorch picks cuDNN's
  flash kernels. For a few long sequences (a REDI pair) it is the fastest choice (measured in
  docs/performance.md).
- ``varlen``: ``torch.nn.attention.varlen.varlen_attn``, one launch for the whole micro-batch;
  CUDA only. Pays off when a micro-batch holds many short sequences, where per-sequence launches
  dominate.

``auto`` takes varlen on CUDA when it exists and the micro-batch holds at least
``VARLEN_MIN_SEQS`` sequences, sdpa otherwise.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F

from ..batch import SeqBoundaries

try:  # torch >= 2.10; absent or CUDA-less builds fall back to sdpa
    from torch.nn.attention.varlen import varlen_attn as _varlen_attn
    # torch 2.11 handles GQA natively; 2.13 asks for enable_gqa=True
    _VARLEN_GQA_KWARGS = ({"enable_gqa": True}
                          if "enable_gqa" in inspect.signature(_varlen_attn).parameters else {})
except ImportError:
    _varlen_attn = None
    _VARLEN_GQA_KWARGS = {}

# A heuristic to be re-measured on each GPU generation: below this many sequences the launch
# overhead of per-sequence SDPA is small next to varlen's slower kernel.
VARLEN_MIN_SEQS = 8

BACKENDS = ("auto", "sdpa", "varlen")


def varlen_available(device: torch.device) -> bool:
    return _varlen_attn is not None and device.type == "cuda"


def attention_sdpa(q, k, v, seqs: SeqBoundaries) -> torch.Tensor:
    # split, not slices: the backward of a split is one concatenation of the sequences' gradients,
    # where each slice's backward would zero a whole [t, n, hd] buffer and add its part into it
    out = []
    for qs, ks, vs in zip(*(x.split(seqs.lengths) for x in (q, k, v))):
        qs, ks, vs = (x.transpose(0, 1).unsqueeze(0) for x in (qs, ks, vs))  # [s, n, hd] -> [1, n, s, hd]
        o = F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, enable_gqa=True)
        out.append(o.squeeze(0).transpose(0, 1))  # [s, nh, hd]
    return out[0] if len(out) == 1 else torch.cat(out, dim=0)


def attention_varlen(q, k, v, seqs: SeqBoundaries) -> torch.Tensor:
    if not varlen_available(q.device):
        raise RuntimeError("varlen attention needs CUDA and torch.nn.attention.varlen")
    m = seqs.max_seqlen
    return _varlen_attn(q, k, v, seqs.cu_seqlens, seqs.cu_seqlens, m, m, window_size=(-1, 0),
                        **_VARLEN_GQA_KWARGS)


def causal_attention(q, k, v, seqs: SeqBoundaries, backend: str = "auto") -> torch.Tensor:
    if backend == "auto":
        use_varlen = varlen_available(q.device) and seqs.num_seqs >= VARLEN_MIN_SEQS
        backend = "varlen" if use_varlen else "sdpa"
    if backend == "sdpa":
        return attention_sdpa(q, k, v, seqs)
    if backend == "varlen":
        return attention_varlen(q, k, v, seqs)
    raise ValueError(f"attention backend {backend!r} is not one of {BACKENDS}")
