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

``auto`` takes varlen on CUDA when it exists, the tensors are fp16 or bf16 (FlashAttention's
only types: fp32 on CUDA goes to SDPA) and the micro-batch holds at least ``VARLEN_MIN_SEQS``
sequences, sdpa otherwise.

Under context parallelism (``context_attention``) each rank holds two chunks of every sequence
(parallel/context.py). Its K and V, few heads under GQA, are all-gathered over the CP group in one
piece and each chunk's queries attend to their sequence's keys up to the chunk's end, the causal
mask aligned to the bottom right (the chunk's queries are the last of those keys). The gathered
keys and values are what the backward keeps; their gradients are reduce-scattered back to the
ranks that own them. docs/design.md says why this scheme rather than a ring.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F

from ..batch import SeqBoundaries
from ..ops.chunk_attention import chunk_attention
from ..parallel.context import ContextShard
from ..parallel.mappings import gather_tokens

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
VARLEN_DTYPES = (torch.float16, torch.bfloat16)  # FlashAttention's kernels take no other


def varlen_available(device: torch.device, dtype: torch.dtype | None = None) -> bool:
    """Whether varlen attention can run on ``device`` (and, given, for tensors of ``dtype``)."""
    return _varlen_attn is not None and device.type == "cuda" and (dtype is None or dtype in VARLEN_DTYPES)


def _require_varlen(q) -> None:
    if not varlen_available(q.device, q.dtype):
        raise RuntimeError(f"varlen attention needs CUDA, torch.nn.attention.varlen and fp16 or bf16 tensors; "
                           f"got {q.dtype} on {q.device.type} (use the sdpa or auto backend)")


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
    _require_varlen(q)
    m = seqs.max_seqlen
    return _varlen_attn(q, k, v, seqs.cu_seqlens, seqs.cu_seqlens, m, m, window_size=(-1, 0),
                        **_VARLEN_GQA_KWARGS)


def _resolve(backend: str, q: torch.Tensor, num_seqs: int, varlen_min_seqs: int = VARLEN_MIN_SEQS) -> str:
    if backend == "auto":
        return "varlen" if varlen_available(q.device, q.dtype) and num_seqs >= varlen_min_seqs else "sdpa"
    if backend not in BACKENDS:
        raise ValueError(f"attention backend {backend!r} is not one of {BACKENDS}")
    return backend


def causal_attention(q, k, v, seqs: SeqBoundaries, backend: str = "auto") -> torch.Tensor:
    if _resolve(backend, q, seqs.num_seqs) == "sdpa":
        return attention_sdpa(q, k, v, seqs)
    return attention_varlen(q, k, v, seqs)


def _chunks_sdpa(q, k_full, v_full, shard: ContextShard) -> list[torch.Tensor]:
    out = []
    lengths = [r1 - r0 for r0, r1, _, _ in shard.chunks] + [q.shape[0] - shard.real_rows]
    for qs, (r0, r1, k0, k1) in zip(q.split(lengths), shard.chunks):  # split: one concatenation in the backward
        ks, vs = k_full[k0:k1], v_full[k0:k1]
        qs, ks, vs = (x.transpose(0, 1).unsqueeze(0) for x in (qs, ks, vs))  # [1, n, s, hd]
        out.append(chunk_attention(qs, ks, vs).squeeze(0).transpose(0, 1))
    return out


def _chunks_varlen(q, k_full, v_full, shard: ContextShard) -> list[torch.Tensor]:
    _require_varlen(q)
    qs, ks = shard.query_spans, shard.key_spans  # built with the shard: no host-to-device copy per layer
    k_chunks, v_chunks = (x.index_select(0, shard.chunk_keys) for x in (k_full, v_full))
    # flash attention's causal mask with fewer queries than keys is aligned to the bottom right
    return [_varlen_attn(q[:shard.real_rows], k_chunks, v_chunks, qs.cu_seqlens, ks.cu_seqlens, qs.max_seqlen,
                         ks.max_seqlen, window_size=(-1, 0), **_VARLEN_GQA_KWARGS)]


def context_attention(q, k, v, shard: ContextShard, cp_group, backend: str = "auto") -> torch.Tensor:
    """Causal attention for this CP rank's rows ``q [n, nh, hd]``, ``k, v [n, nkv, hd]`` (the
    padding rows' outputs are zero)."""
    nkv = k.shape[1]
    kv = gather_tokens(torch.cat((k, v), dim=1), cp_group)  # [cp n, 2 nkv, hd], rank after rank
    k_full, v_full = kv.index_select(0, shard.kv_order).split(nkv, dim=1)  # [T, nkv, hd] each, in order
    # auto: varlen wherever it runs, whatever the number of chunks (one launch for all, no mask built)
    chunked = _chunks_sdpa if _resolve(backend, q, len(shard.chunks), 0) == "sdpa" else _chunks_varlen
    out = chunked(q, k_full, v_full, shard) if shard.chunks else []
    if q.shape[0] > shard.real_rows:
        out.append(q.new_zeros((q.shape[0] - shard.real_rows, *q.shape[1:])))
    return out[0] if len(out) == 1 else torch.cat(out, dim=0)
