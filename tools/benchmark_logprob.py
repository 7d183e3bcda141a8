#!/usr/bin/env python
"""Per-sequence masked log-probs: every available path beside the naive one, in one run.

    python tools/benchmark_logprob.py                                # 16k tokens, Qwen2.5-1.5B head
    python tools/benchmark_logprob.py --tokens 65536 --json out.json
    python tools/benchmark_logprob.py --tokens 2048 --hidden 256 --vocab 32768   # quick, CPU
    python tools/benchmark_logprob.py --paths single-pass/cuda-extension@441,single-pass/cuda-extension@3530 \
        --chunk-tokens 441,3530                                     # the head's chunk size

For each path: forward + backward time, extra memory (CUDA: peak allocated beyond the inputs and
the gradients dX, dW; CPU: the process's peak RSS), and the gradients' relative errors against an
fp32 computation of the same inputs, ||g - g32|| / ||g32||, for dW and dX. The fused paths
accumulate dW into an fp32 main_grad as the trainer does; dX is returned in the activation
dtype, so in bf16 its error cannot fall below the rounding of bf16 itself (about 1.1e-3). Paths:

    naive          bf16 logits [t, V], fp32 log_softmax, gather (what a plain PyTorch user writes)
    two-pass/K     sequence_logprobs with kernels K, upstream gradient arriving in the backward
    single-pass/K  the same with token_coeff: dX and dW during the forward (3 GEMMs)

K is each available kernel set: "pytorch" (the reference) and "cuda-extension" (csrc/, on CUDA).
"""

import argparse
import sys
import json
import resource
import time

import torch

from megatron_redi import main_grad
from megatron_redi.settings import COMPUTE_DTYPES, DTYPES
from megatron_redi.ops.logprob_kernels import KERNELS
from megatron_redi.parallel.logprob_head import sequence_logprobs
from megatron_redi.atomic import atomic_file
from megatron_redi.cli import HelpFormatter, command


def make_inputs(tokens, hidden, vocab, seqs, dtype, device, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    h = (torch.randn(tokens, hidden, generator=g) * 0.5).to(device, dtype)
    w = (torch.randn(vocab, hidden, generator=g) * 0.02).to(device, dtype)
    targets = torch.randint(0, vocab, (tokens,), generator=g).to(device)
    per = tokens // seqs
    seq_index = torch.arange(tokens, device=device).div(per, rounding_mode="floor").clamp(max=seqs - 1)
    lengths = torch.bincount(seq_index, minlength=seqs).float()
    # REDI's plan: chosen -1/|y|, rejected +0.8/|y| (pairs of sequences), over one pair per 2 seqs
    sign = torch.tensor([-1.0 if i % 2 == 0 else 0.8 for i in range(seqs)], device=device)
    upstream = sign / lengths / max(1, seqs // 2)
    return h, w, targets, seq_index, upstream


def naive(h, w, targets, seq_index, n, upstream):
    logits = h @ w.t()  # [t, V] in bf16
    token = torch.log_softmax(logits.float(), dim=-1).gather(1, targets[:, None]).squeeze(1)
    logp_sum = torch.zeros(n, device=h.device).index_add_(0, seq_index, token)
    logp_sum.backward(upstream)
    return logp_sum


def fused(single, kernels, chunk_tokens=None):
    def run(h, w, targets, seq_index, n, upstream):
        main_grad.attach(w, torch.zeros(w.shape, dtype=torch.float32, device=w.device), open_=True)
        coeff = upstream[seq_index] if single else None
        logp_sum, _ = sequence_logprobs(h, w, targets, seq_index, n, token_coeff=coeff, kernels=kernels,
                                        chunk_tokens=chunk_tokens)
        logp_sum.backward(upstream)
        return logp_sum
    return run


def measure(fn, inputs, n, repeats, reference):
    h0, w0, targets, seq_index, upstream = inputs
    cuda = h0.device.type == "cuda"
    times = []
    for i in range(repeats + 1):  # the first run warms up
        h, w = h0.clone().requires_grad_(), w0.clone().requires_grad_()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        start = time.perf_counter()
        fn(h, w, targets, seq_index, n, upstream)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    dw = main_grad.of(w)
    dw = w.grad if dw is None else dw
    grads = h.grad.numel() * h.grad.element_size() + dw.numel() * dw.element_size()
    extra = (torch.cuda.max_memory_allocated() - base - grads) if cuda else None
    err_dx = err_dw = float("nan")
    if reference is not None:
        err_dx, err_dw = (((g.float() - r).norm() / r.norm()).item() for g, r in zip((h.grad, dw), reference))
    return {"ms": 1000 * min(times[1:]), "extra_gb": None if extra is None else extra / 1e9,
            "grad_rel_err_dx": err_dx, "grad_rel_err_dw": err_dw}


@command
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--tokens", type=int, default=16384)
    p.add_argument("--hidden", type=int, default=1536)
    p.add_argument("--vocab", type=int, default=151936)
    p.add_argument("--seqs", type=int, default=2, help="sequences the tokens are split into (a pair: 2)")
    p.add_argument("--dtype", default="bf16", choices=COMPUTE_DTYPES)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--paths", help="comma-separated subset of the paths (default: all available)")
    p.add_argument("--no-naive", action="store_true", help="skip the naive path (its [t, V] logits need t*V*6 bytes)")
    p.add_argument("--no-error", action="store_true", help="skip the fp32 reference and the error columns")
    p.add_argument("--chunk-tokens", help="comma-separated chunk sizes to time the fused paths at "
                   "(0: the library's own choice, the default), each but 0 labelled @size")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = DTYPES[args.dtype]
    inputs = make_inputs(args.tokens, args.hidden, args.vocab, args.seqs, dtype, device)

    paths = {} if args.no_naive else {"naive": naive}
    chunks = [int(c) for c in args.chunk_tokens.split(",")] if args.chunk_tokens else [None]
    for k in KERNELS.available(device):
        for c in chunks:
            at = f"@{c}" if c else ""
            paths[f"two-pass/{k}{at}"] = fused(False, k, c)
            paths[f"single-pass/{k}{at}"] = fused(True, k, c)
    if args.paths:
        unknown = set(args.paths.split(",")) - set(paths)
        if unknown:
            p.error(f"unknown or unavailable path(s) {sorted(unknown)}; available: {sorted(paths)}")
        paths = {k: v for k, v in paths.items() if k in args.paths.split(",")}

    reference = None
    if not args.no_error:  # fp32 gradients through the exact chunked path, on fp32 copies
        h, w = (x.float().clone().requires_grad_() for x in inputs[:2])
        fused(False, "pytorch")(h, w, *inputs[2:4], args.seqs, inputs[4])
        reference = (h.grad, main_grad.of(w))
        del h, w
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"{name}: {args.tokens} tokens, hidden {args.hidden}, vocab {args.vocab}, {args.dtype}, "
          f"forward + backward, best of {args.repeats}")
    results = {}
    for label, fn in paths.items():
        results[label] = r = measure(fn, inputs, args.seqs, args.repeats, reference)
        mem = f"{r['extra_gb']:.3f} GB extra" if r["extra_gb"] is not None else ""
        print(f"  {label:28s} {r['ms']:9.1f} ms  {mem:16s} rel err dW {r['grad_rel_err_dw']:.1e}  "
              f"dX {r['grad_rel_err_dx']:.1e}")
    peak_rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    if device.type == "cpu":
        print(f"  peak RSS of the process: {peak_rss_gb:.2f} GiB")
    if args.json:
        with atomic_file(args.json) as f:
            json.dump({"device": name, "args": vars(args), "results": results, "peak_rss_gib": peak_rss_gb}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
