#!/usr/bin/env python
"""Training-step throughput on one device: this library against what users run today.

    python tools/benchmark_throughput.py --preset qwen2.5-1.5b --seq-len 8192 --compare hf --json out.json
    python tools/benchmark_throughput.py --preset tiny --seq-len 256 --steps 2      (CPU smoke run)

One step = one (chosen, rejected) pair of --seq-len tokens each (SFT: one sequence of 2 x seq-len),
the first --prompt-len tokens of each sequence being prompt, run by the trainer's own step functions
(megatron_redi/training/step.py): forward, the loss's log-probs, backward, gradient norm and
clipping, AdamW on fp32 master weights, copy to the bf16 weights. Random weights of the preset's
shapes; nothing is downloaded.

Printed: tokens/s, model TFLOP/s and MFU (FLOPs as in megatron_redi/training/metrics.py; MFU
against the card's own dense bf16 peak as its vendor states it, or --peak-tflops) from --steps steps timed as the trainer runs them (no device sync between
phases), peak memory, the time per phase (forward, head, backward, optimizer; communication is
zero on one device) from --steps more steps with a device sync at each phase boundary, and the
step's ceiling measured in the same run: the time of the model's own GEMM shapes (forward, dgrad,
wgrad) and attention kernels (forward + backward) for this micro-batch, summed without recompute.

--compare hf runs the step as a Hugging Face user does (transformers, SDPA, gradient checkpointing,
fp32 weights with bf16 autocast, full logits, fused AdamW) in the same process; --compare hf-liger
adds Liger's RoPE / RMSNorm / SwiGLU kernels and its fused linear cross-entropy (when liger-kernel
is importable). --json writes tokens_per_s and, when compared, hf_tokens_per_s and speedup_vs_hf.
"""

from __future__ import annotations

import argparse
import sys
import dataclasses
import gc
import importlib.util
import json
import os
import tempfile
import time

import torch
import torch.nn.functional as F

from megatron_redi.model_config import PRESETS, ModelConfig, preset
from megatron_redi.data import Sequence, TrainingItem, build_micro_batch
from megatron_redi.losses import LossConfig
from megatron_redi.model import RECOMPUTE_MODES, Decoder
from megatron_redi.parallel import ParallelState
from megatron_redi.training.config import OptimSection
from megatron_redi.training.metrics import mfu_peak_tflops, step_flops
from megatron_redi.training.optimizer import MasterParams
from megatron_redi.training.profiling import idle_report
from megatron_redi.training.step import forward_backward, optimizer_step
from megatron_redi.atomic import atomic_file
from megatron_redi.cli import HelpFormatter, command


class Timer:
    def __init__(self, device):
        self.cuda = device.type == "cuda"

    def now(self):
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()


def make_batch(cfg: ModelConfig, seq_len: int, prompt_len: int, sft: bool, device):
    g = torch.Generator().manual_seed(0)
    seqs = [Sequence(torch.randint(0, cfg.vocab_size, (n,), generator=g).numpy(), prompt_len)
            for n in ([2 * seq_len] if sft else [seq_len, seq_len])]
    return build_micro_batch([TrainingItem(0, tuple(seqs))])


def ours(cfg, args, device, dtype):
    parallel = ParallelState(device=device)
    torch.manual_seed(0)
    model = Decoder(cfg, parallel, dtype=dtype, recompute=args.recompute)
    master = MasterParams(model, parallel)
    loss_cfg = LossConfig(type=args.loss)  # each loss with its own (the paper's) defaults
    mb = make_batch(cfg, args.seq_len, args.prompt_len, args.loss == "sft", device)
    if args.loss == "dpo":  # reference sums carried by the batch, as the pre-pass provides them
        mb = dataclasses.replace(mb, ref_logps=torch.zeros(mb.num_seqs))
    total = float(mb.num_response_tokens) if args.loss == "sft" else float(len(mb.pairs.chosen))
    optim = OptimSection()  # the paper's AdamW settings and clipping
    timer = Timer(device)
    phases = {"forward": [], "head": [], "backward": [], "optimizer": []}

    def step(clock):
        """One step as the trainer runs it; ``clock`` marks the phase boundaries (timer.now: with a
        device sync)."""
        marks = [clock()]
        forward_backward(model, master, [mb], loss_cfg, total, on_phase=lambda _: marks.append(clock()))
        # the gradient norm's clipping factor is the step's one host sync, as in the trainer
        optimizer_step(master, float(master.grads.norm()), optim.lr, optim)
        marks.append(clock())
        return tuple(b - a for a, b in zip(marks, marks[1:]))

    for _ in range(args.warmup):
        step(timer.now)
    # the step time without syncs between phases (as the trainer runs), then the phases apart
    # events at the step boundaries, recorded without a sync: each step's time on the device
    events = [torch.cuda.Event(enable_timing=True) for _ in range(args.steps + 1)] if timer.cuda else []
    start = timer.now()
    for i in range(args.steps):
        if events:
            events[i].record()
        step(time.perf_counter)
    if events:
        events[-1].record()
    step_time = (timer.now() - start) / args.steps
    each_ms = [a.elapsed_time(b) for a, b in zip(events, events[1:])]
    for _ in range(args.steps):
        for name, dt in zip(phases, step(timer.now)):
            phases[name].append(dt)
    if args.profile:
        profile(lambda: step(time.perf_counter), device, args.profile)
    return {"step_s": step_time, "each_step_ms": each_ms, "phases_ms": {k: 1000 * sum(v) / len(v) for k, v in phases.items()},
            "seq_lengths": mb.seqs.lengths,
            "response_tokens": mb.num_response_tokens, "tokens": mb.num_tokens,
            "full_recompute_layers": model.plan_recompute(mb.num_tokens)}


def hf_step(cfg, args, device, liger: bool):
    """The Hugging Face user's step (TRL's REDI trainer as run today): fp32 weights, bf16 autocast,
    full recompute."""
    from transformers import AutoConfig, AutoModelForCausalLM

    hf_cfg = cfg.to_hf_dict()
    config = AutoConfig.for_model(cfg.family.name, **{k: v for k, v in hf_cfg.items() if k != "model_type"})
    config._attn_implementation = "sdpa"
    if liger:  # Liger names its patch after the HF model_type
        import liger_kernel.transformers as liger_kernels
        apply = getattr(liger_kernels, f"apply_liger_kernel_to_{cfg.family.name}")
        apply(rope=True, rms_norm=True, swiglu=True, cross_entropy=False, fused_linear_cross_entropy=False)
    torch.manual_seed(0)
    with torch.device(device):  # random init on the device: seconds, not a minute on the host
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.20's name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=1e-4, fused=device.type == "cuda")
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (2, args.seq_len), generator=g).to(device)
    labels = ids[:, 1:]
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, args.prompt_len - 1:] = True
    lengths = mask.sum(-1).float()
    if liger:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
        lce = LigerFusedLinearCrossEntropyLoss(reduction="none")
    timer, times = Timer(device), []
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    for step in range(args.warmup + args.steps):
        t0 = timer.now()
        opt.zero_grad(set_to_none=True)
        with amp:
            if liger:
                hidden = model.model(input_ids=ids).last_hidden_state[:, :-1]
                nll = lce(model.lm_head.weight, hidden.reshape(-1, hidden.shape[-1]), labels.reshape(-1))
                token_logps = -nll.view(2, -1)
            else:
                logits = model(input_ids=ids).logits[:, :-1]
                token_logps = torch.log_softmax(logits.float(), -1).gather(-1, labels[..., None]).squeeze(-1)
            logps = (token_logps * mask).sum(-1)
            loss = -logps[0] / lengths[0] + 0.8 * logps[1] / lengths[1]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        t1 = timer.now()
        if step >= args.warmup:
            times.append(t1 - t0)
    return sum(times) / len(times)


def profile(step, device, rows: int):
    """One more step under torch.profiler: the kernels that take the time, most first, then where
    the device sat idle (see ``device_idle``)."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch_profile(activities=activities, record_shapes=True) as prof:
        step()
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=rows))
    # PyTorch's own ops by input shape: which of the many small elementwise passes costs what
    by_shape = sorted((e for e in prof.key_averages(group_by_input_shape=True) if e.key.startswith("aten::")),
                      key=lambda e: -getattr(e, key))
    print("aten ops by input shape (self time, ms; calls):")
    for e in by_shape[:rows // 2]:
        print(f"  {getattr(e, key) / 1e3:8.2f}  {e.count:4d}  {e.key}  {str(e.input_shapes)[:100]}")
    if device.type == "cuda":
        with tempfile.TemporaryDirectory() as tmp:
            prof.export_chrome_trace(os.path.join(tmp, "trace.json"))
            with open(os.path.join(tmp, "trace.json")) as f:
                events = json.load(f)["traceEvents"]
        print(idle_report(events, rows=min(rows, 15)))


def median_time(fn, device, repeats=5, trials=5):
    """Seconds per call: the median of ``trials`` timings of ``repeats`` calls (single timings of a
    GEMM moved by 10 % between runs on the same card: clocks, other tenants)."""
    timer = Timer(device)
    fn()
    times = []
    for _ in range(trials):
        t0 = timer.now()
        for _ in range(repeats):
            fn()
        times.append((timer.now() - t0) / repeats)
    return sorted(times)[trials // 2]


def ceiling(cfg, seq_lengths, response_tokens, device, dtype) -> dict[str, float]:
    """Seconds of the step's GEMMs (forward, dgrad, wgrad) and attention (fwd + bwd), no recompute:
    the layers' GEMMs, their attention and the LM head's GEMMs apart."""
    t = sum(seq_lengths)
    h, hd = cfg.hidden_size, cfg.head_dim
    shapes = [(h, (cfg.num_heads + 2 * cfg.num_kv_heads) * hd), (cfg.num_heads * hd, h),
              (h, 2 * cfg.intermediate_size), (cfg.intermediate_size, h)]

    def gemms(rows, k, n):
        x, w = torch.randn(rows, k, device=device, dtype=dtype), torch.randn(n, k, device=device, dtype=dtype)
        dy = torch.randn(rows, n, device=device, dtype=dtype)
        return sum(median_time(fn, device) for fn in (lambda: x @ w.t(), lambda: dy @ w, lambda: dy.t() @ x))

    layer = sum(gemms(t, k, n) for k, n in shapes)
    attn = 0.0
    for n in set(seq_lengths):
        q = torch.randn(1, cfg.num_heads, n, hd, device=device, dtype=dtype, requires_grad=True)
        k = torch.randn(1, cfg.num_kv_heads, n, hd, device=device, dtype=dtype, requires_grad=True)
        v = torch.randn_like(k, requires_grad=True)
        def run():
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            torch.autograd.grad(o, (q, k, v), torch.ones_like(o))
        attn += median_time(run, device) * seq_lengths.count(n)
    return {"gemms": cfg.num_layers * layer, "attention": cfg.num_layers * attn,
            "head": gemms(response_tokens, h, cfg.vocab_size)}


@command
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--preset", choices=sorted(PRESETS))
    src.add_argument("--hf-config", help="an HF config.json (or its directory)")
    p.add_argument("--seq-len", type=int, default=8192, help="tokens per sequence of the pair")
    p.add_argument("--prompt-len", type=int, default=256)
    p.add_argument("--loss", default="redi", choices=["redi", "symmetric", "dpo", "simpo", "sft"])
    p.add_argument("--recompute", default="auto", choices=list(RECOMPUTE_MODES))
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--compare", choices=["hf", "hf-liger"])
    p.add_argument("--no-ceiling", action="store_true")
    p.add_argument("--peak-tflops", type=float,
                   help="the card's dense bf16 TFLOP/s for MFU (default: its vendor's figure for a known card)")
    p.add_argument("--profile", type=int, default=0, metavar="ROWS",
                   help="profile one more step and print its ROWS most expensive kernels")
    p.add_argument("--json")
    args = p.parse_args(argv)
    if args.compare == "hf-liger" and importlib.util.find_spec("liger_kernel") is None:
        p.error("--compare hf-liger needs liger-kernel (pip install liger-kernel, or the package's [gpu] extra); "
                "--compare hf runs without it")
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")  # as train.py does
    cfg = preset(args.preset) if args.preset else ModelConfig.from_hf(args.hf_config)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    card = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    peak = mfu_peak_tflops(device, args.peak_tflops)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    r = ours(cfg, args, device, dtype)
    flops = step_flops(cfg, r["seq_lengths"], r["response_tokens"])
    out = {"device": card, "preset": args.preset, "seq_len": args.seq_len, "loss": args.loss, "recompute": args.recompute,
           "full_recompute_layers": r["full_recompute_layers"],
           "tokens_per_s": r["tokens"] / r["step_s"], "step_ms": 1000 * r["step_s"], "each_step_ms": r["each_step_ms"],
           "phases_ms": r["phases_ms"],
           "communication_ms": 0.0, "model_tflops": flops / r["step_s"] / 1e12,
           "peak_tflops": peak, "mfu": flops / r["step_s"] / (peak * 1e12) if peak else None,
           "peak_memory_gb": torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else None}
    if args.warmup < 2 or args.steps < 3:  # first calls compile kernels and fill caches
        out["warmup_dominated"] = True
        print(f"note: {args.steps} timed steps after {args.warmup} warm-up steps: the figures below are dominated by "
              "warm-up (allocations, kernel compilation), not a measurement; use --warmup 2 --steps 5 or more")
    print(f"{card}: {cfg.architecture} {args.preset or args.hf_config}, pair of 2 x {args.seq_len} tokens, {args.loss}, "
          f"recompute {args.recompute} ({r['full_recompute_layers']} of {cfg.num_layers} layers in full)")
    print(f"  megatron_redi   {out['tokens_per_s']:10,.0f} tokens/s  {out['model_tflops']:7.1f} TFLOP/s"
          + (f"  MFU {100 * out['mfu']:.1f} % (of {peak:.0f})" if out["mfu"] is not None else "")
          + (f"  peak {out['peak_memory_gb']:.1f} GB" if out["peak_memory_gb"] is not None else ""))
    print("  phases (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in r["phases_ms"].items()) + ", communication 0.0")
    if r["each_step_ms"]:
        print(f"  step {out['step_ms']:.1f} ms on average, each: " + ", ".join(f"{t:.1f}" for t in r["each_step_ms"]))
    if not args.no_ceiling:
        parts = ceiling(cfg, r["seq_lengths"], r["response_tokens"], device, dtype)
        c = sum(parts.values())
        out.update(ceiling_ms=1000 * c, ceiling_parts_ms={k: 1000 * v for k, v in parts.items()},
                   ceiling_tokens_per_s=r["tokens"] / c, fraction_of_ceiling=c / r["step_s"])
        print(f"  ceiling (GEMMs + attention, same run) {out['ceiling_tokens_per_s']:,.0f} tokens/s: "
              f"this step reaches {100 * out['fraction_of_ceiling']:.0f} % of it")
        print("  ceiling (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in out["ceiling_parts_ms"].items()))
    save(out, args.json)  # now, and again with the comparison: a failing baseline loses nothing of ours
    if args.compare:
        gc.collect()  # our model and optimizer state died with ours(): their memory goes to the baseline
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            out["allocated_before_baseline_gb"] = torch.cuda.memory_allocated() / 1e9
        hf_s = hf_step(cfg, args, device, liger=args.compare == "hf-liger")
        out.update(hf_stack=args.compare, hf_tokens_per_s=r["tokens"] / hf_s, speedup_vs_hf=hf_s / r["step_s"],
                   hf_peak_memory_gb=torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else None)
        print(f"  {args.compare:15s} {out['hf_tokens_per_s']:10,.0f} tokens/s   speedup {out['speedup_vs_hf']:.2f}x")
    save(out, args.json)
    return 0


def save(out: dict, path: str | None):
    if path:
        with atomic_file(path) as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
