#!/usr/bin/env python
"""Activation memory and step time of one long sequence at several context-parallel sizes, in one run.

    python tools/benchmark_context_parallel.py --tokens 8192 --cp 1 2 4 --output cp.json

For each CP size it starts that many ranks (torchrun, gloo on CPU; one GPU each under NCCL), trains
a few SFT steps of one sequence of --tokens tokens on a synthetic Qwen2-shaped model, and reports
per rank: the bytes the forward saves for the backward (counted exactly, each storage once, through
autograd's saved-tensor hooks: the activations), the rise of the process's peak memory during the
first step (CPU: resident set; CUDA: the allocator's peak), the median time of the later steps, and,
for one layer's forward, the time of the K/V all-gather against the whole context-parallel attention
(the gather's share: what a ring exchange could hide). The goal of context parallelism is the first
of these near 1/CP of CP=1's.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from megatron_redi.atomic import atomic_file
from megatron_redi.cli import HelpFormatter, command, positive_int

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Qwen2.5-1.5B's proportions (MLP 5.8 h, 6 query heads per KV head, head dim h / 12), scaled down
MODEL = dict(hidden_size=384, intermediate_size=2240, num_hidden_layers=2, num_attention_heads=12,
             num_key_value_heads=2, vocab_size=2048)


def saved_bytes(fn, params) -> tuple[object, int]:
    """``fn()``'s result and the bytes of the distinct storages autograd saved meanwhile, less
    those of ``params`` (weights the GEMMs keep for their backward are not activations)."""
    weights = {p.untyped_storage().data_ptr() for p in params}
    seen = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(seen.values())


def peak_bytes(device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def compute_dtype(device) -> torch.dtype:
    """bf16 on CUDA, as training runs there (FlashAttention's type; fp32 would take SDPA's math
    kernel at 32k tokens), fp32 on CPU."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def attention_times(parallel, tokens: int, repeats: int = 5) -> tuple[float, float]:
    """Median seconds of one layer's K/V all-gather and of its whole CP attention (gather included),
    forward only, at the model's head shapes for one sequence of ``tokens``."""
    from megatron_redi.model.attention import context_attention
    from megatron_redi.parallel.context import split
    from megatron_redi.parallel.mappings import gather_tokens

    heads, kv_heads = MODEL["num_attention_heads"], MODEL["num_key_value_heads"]
    hd = MODEL["hidden_size"] // heads
    shard = split([0, tokens], torch.zeros(0, dtype=torch.int64), parallel.cp_size, parallel.cp_rank).to(parallel.device)
    q, k, v = (torch.randn(shard.rows, n, hd, device=parallel.device, dtype=compute_dtype(parallel.device))
               for n in (heads, kv_heads, kv_heads))
    kv = torch.cat((k, v), dim=1)

    def timed(fn):
        times = []
        for _ in range(repeats + 1):
            start = time.perf_counter()
            fn()
            if parallel.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        return statistics.median(times[1:])  # the first call warms up

    with torch.no_grad():
        return (timed(lambda: gather_tokens(kv, parallel.cp_group)),
                timed(lambda: context_attention(q, k, v, shard, parallel.cp_group)))


def worker(args) -> None:
    import numpy as np

    from megatron_redi.model_config import preset
    from megatron_redi.data import TrainingItem, pack
    from megatron_redi.data.dataset import Sequence
    from megatron_redi.losses import LossConfig
    from megatron_redi.model import Decoder
    from megatron_redi.parallel import initialize, shutdown
    from megatron_redi.training.optimizer import MasterParams
    from megatron_redi.training.step import forward_backward

    parallel = initialize(context_parallel_size=args.cp)
    torch.manual_seed(0)
    model = Decoder(preset("tiny", **MODEL), parallel, dtype=compute_dtype(parallel.device), recompute="selective")
    master = MasterParams(model, parallel)
    tokens = np.random.default_rng(0).integers(1, MODEL["vocab_size"], args.tokens)
    batches = pack([TrainingItem(0, (Sequence(tokens, 16),))], args.tokens, 1, 0)
    loss, total = LossConfig(type="sft"), float(args.tokens - 16)
    before = peak_bytes(parallel.device)
    _, activations = saved_bytes(lambda: forward_backward(model, master, batches, loss, total), model.parameters())
    rise = peak_bytes(parallel.device) - before
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        forward_backward(model, master, batches, loss, total)
        if parallel.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    gather_s, attention_s = attention_times(parallel, args.tokens)
    with open(os.path.join(args.worker, f"rank{parallel.rank}.json"), "w") as f:
        json.dump({"cp": args.cp, "rank": parallel.rank, "activation_bytes": activations, "peak_rise_bytes": rise,
                   "step_s": statistics.median(times), "layer_gather_s": gather_s, "layer_attention_s": attention_s}, f)
    shutdown()


def measure(cp: int, args) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={cp}", __file__,
               "--worker", tmp, "--cp", str(cp), "--tokens", str(args.tokens), "--steps", str(args.steps)]
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"CP={cp} failed:\n{done.stderr[-3000:]}")
        ranks = []
        for r in range(cp):
            with open(os.path.join(tmp, f"rank{r}.json")) as f:
                ranks.append(json.load(f))
        return ranks


@command
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--tokens", type=positive_int, default=8192, help="the sequence's length")
    parser.add_argument("--cp", type=positive_int, nargs="+", default=[1, 2, 4], help="context-parallel sizes")
    parser.add_argument("--steps", type=positive_int, default=2, help="timed steps after the measured one")
    parser.add_argument("--output", help="write every rank's figures here as JSON")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        args.cp = args.cp[0]
        worker(args)
        return 0
    rows, base = [], None
    print(f"one sequence of {args.tokens} tokens, model {MODEL}")
    print("CP  activations/rank (max)  vs CP=1   peak rise/rank (max)   step time (max rank)   "
          "one layer: K/V gather / CP attention (max rank)")
    for cp in args.cp:
        ranks = measure(cp, args)
        rows += ranks
        act = max(r["activation_bytes"] for r in ranks)
        base = base or (act if cp == 1 else None)
        ratio = f"{act / base:.3f}" if base else "-"
        print(f"{cp:<3} {act / 2**20:>18.1f} MB  {ratio:>7}   {max(r['peak_rise_bytes'] for r in ranks) / 2**20:>16.1f} MB"
              f"   {max(r['step_s'] for r in ranks):>10.2f} s   {1e3 * max(r['layer_gather_s'] for r in ranks):>8.2f} / "
              f"{1e3 * max(r['layer_attention_s'] for r in ranks):.2f} ms", flush=True)
    if args.output:  # a benchmark's figures: replaced whole, never half written
        with atomic_file(args.output) as f:
            json.dump({"tokens": args.tokens, "model": MODEL, "torch": torch.__version__, "ranks": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
