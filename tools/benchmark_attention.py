#!/usr/bin/env python
"""Causal attention over one packed micro-batch, forward + backward, in the ways it can be called.

    python tools/benchmark_attention.py --seq-lens 8192,8192            # a REDI pair, Qwen2.5-1.5B heads
    python tools/benchmark_attention.py --seq-lens 3072,13312 --json out.json
    python tools/benchmark_attention.py --seq-lens 64,32 --heads 4 --kv-heads 2 --head-dim 16   # CPU

Why: in the 2 x 8192 training step attention took longer per layer than a bare harness measured
for the same shapes (docs/performance.md). The variants differ in layout and in the kernel PyTorch
picks; every one of them is timed here on the same inputs:

    model            the model's path (model/attention.py): q, k, v as [t, n, hd], one SDPA call per
                     sequence on strided [1, n, s, hd] views, outputs concatenated
    model/<backend>  the same with SDPA restricted to one backend (cudnn, flash, efficient; CUDA)
    contiguous       one SDPA call per sequence on contiguous [1, n, s, hd] copies (the ceiling's
                     way in benchmark_throughput.py); the copies are not timed
    batched          one SDPA call on [B, n, s, hd] (only when all sequences have the same length)
    varlen           torch.nn.attention.varlen.varlen_attn over the packed tokens (CUDA)

Printed: ms per layer for the forward and for forward + backward (the backward with a random output
gradient), the median of 5 timings, and the largest difference of each variant's output from
the model's path. --json writes the same.
"""

from __future__ import annotations

import argparse
import sys
import json

import torch
import torch.nn.functional as F

from benchmark_throughput import median_time  # tools/ is on the path of a script run from it
from megatron_redi.batch import SeqBoundaries
from megatron_redi.model.attention import attention_sdpa, attention_varlen, varlen_available
from megatron_redi.atomic import atomic_file
from megatron_redi.cli import HelpFormatter, command


def per_sequence(q, k, v, seqs):
    """SDPA on contiguous [1, n, s, hd] copies of each sequence: (run, leaves)."""
    pieces = [[x.transpose(0, 1).unsqueeze(0).contiguous().detach().requires_grad_() for x in xs]
              for xs in zip(*(t.split(seqs.lengths) for t in (q, k, v)))]

    def run():
        return torch.cat([F.scaled_dot_product_attention(*p, is_causal=True, enable_gqa=True).squeeze(0).transpose(0, 1)
                          for p in pieces])
    return run, [x for p in pieces for x in p]


def batched(q, k, v, seqs):
    """One SDPA call on [B, n, s, hd] (sequences of one length): (run, leaves)."""
    qb, kb, vb = (x.reshape(seqs.num_seqs, -1, *x.shape[1:]).transpose(1, 2).contiguous().detach().requires_grad_()
                  for x in (q, k, v))

    def run():
        o = F.scaled_dot_product_attention(qb, kb, vb, is_causal=True, enable_gqa=True)  # [B, nh, s, hd]
        return o.transpose(1, 2).reshape(-1, *o.shape[1:2], o.shape[-1])
    return run, [qb, kb, vb]


def with_backend(run, backend: str):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def wrapped():
        with sdpa_kernel(getattr(SDPBackend, backend)):
            return run()
    return wrapped


def measure(run, leaves, want, device, repeats):
    """(forward ms, forward + backward ms, max |out - want|) of one variant; out is [t, nh, hd]."""
    with torch.no_grad():
        out = run()
        forward = median_time(run, device, repeats)
    grad = torch.randn_like(out)
    both = median_time(lambda: torch.autograd.grad(run(), leaves, grad), device, repeats)
    return 1000 * forward, 1000 * both, (out.float() - want.float()).abs().max().item()


@command
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--seq-lens", default="8192,8192", help="lengths of the packed sequences")
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json")
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    lengths = [int(n) for n in args.seq_lens.split(",")]
    seqs = SeqBoundaries.from_lengths(lengths, device)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(seqs.num_tokens, n, args.head_dim, generator=g).to(device, dtype).requires_grad_()
               for n in (args.heads, args.kv_heads, args.kv_heads))
    with torch.no_grad():
        want = attention_sdpa(q, k, v, seqs)

    model = lambda: attention_sdpa(q, k, v, seqs)  # noqa: E731
    variants = {"model": (model, [q, k, v])}
    if device.type == "cuda":
        for backend in ("CUDNN_ATTENTION", "FLASH_ATTENTION", "EFFICIENT_ATTENTION"):
            variants[f"model/{backend.split('_')[0].lower()}"] = (with_backend(model, backend), [q, k, v])
    variants["contiguous"] = per_sequence(q, k, v, seqs)
    if len(set(lengths)) == 1:
        variants["batched"] = batched(q, k, v, seqs)
    if varlen_available(device):
        variants["varlen"] = (lambda: attention_varlen(q, k, v, seqs), [q, k, v])

    card = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"{card}: causal attention, sequences {lengths}, {args.heads}/{args.kv_heads} heads of {args.head_dim}, "
          f"{dtype}; ms per layer (median of 5)")
    results = {}
    for name, (run, leaves) in variants.items():
        try:
            fwd, both, diff = measure(run, leaves, want, device, args.repeats)
        except RuntimeError as e:  # a backend that does not take these shapes or this card
            print(f"  {name:18s} not available: {str(e).splitlines()[0][:100]}")
            continue
        results[name] = {"forward_ms": fwd, "forward_backward_ms": both, "max_abs_diff": diff}
        print(f"  {name:18s} forward {fwd:8.3f}   forward + backward {both:8.3f}   max |diff| {diff:.1e}")
    if args.json:
        with atomic_file(args.json) as f:
            json.dump({"device": card, "seq_lens": lengths, "heads": args.heads, "kv_heads": args.kv_heads,
                       "head_dim": args.head_dim, "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
