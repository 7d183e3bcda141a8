#!/usr/bin/env python
"""Generation speed: the evaluator's generator against transformers' generate() with a static
cache, on the same random model and the same prompts, in one run; or (--batching) its continuous
batching against the static batching it replaced, on generations of long-tailed lengths.

    python tools/benchmark_generation.py --preset qwen2.5-0.5b --layers 2 --json gen.json
    python tools/benchmark_generation.py --batching --jobs 64 --batch 16 --new-tokens 256 --json batching.json

--batching: --jobs generations sampled at temperature 1 from the random model, each stopping when it
draws one of a set of stop tokens sized so that a generation's expected length is a quarter of
--new-tokens: most stop early, a few run to the limit, as reasoning traces do. Each job has its own
seed, so both ways generate the very same tokens where the arithmetic does not depend on which
prompts are prefilled together: on CPU in fp32 (checked: a difference is an error). In bf16 on
CUDA, prefills of different groupings round differently and a sampled token near a tie may change;
there the share of identical generations and the first divergence are reported instead. The ratio
of their tokens/s is what continuous batching buys.

Both decode greedily and exactly --new-tokens per prompt (no stop token), so that they do the
same work; tokens/s counts generated tokens over the wall time of the whole batch (prefill
included), best of --repeats calls taken in turns after one warm-up call each. identical_sequences
counts the prompts whose greedy continuations agree token for token (a random model has near-ties
that fp32 rounding may break either way). On CUDA both run in bf16, on CPU in fp32.
"""

import argparse
import json
import sys
import tempfile
import time

import torch

from megatron_redi.atomic import atomic_file
from megatron_redi.cli import HelpFormatter, command
from megatron_redi.model_config import PRESETS, preset
from megatron_redi.eval.generate import generate, generate_samples
from megatron_redi.fixtures import write_random_hf_checkpoint
from megatron_redi.model import from_pretrained
from megatron_redi.parallel import initialize


def _best_times(fns, repeats):
    """The best wall time of each function, the calls interleaved so that a slow spell of a shared
    machine does not fall on one side only."""
    for fn in fns:
        fn()  # warm-up
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


@command
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    p.add_argument("--layers", type=int, help="override the preset's number of layers")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3, help="best of this many timed calls")
    p.add_argument("--json", help="write the figures here")
    p.add_argument("--batching", action="store_true", help="continuous against static batching instead")
    p.add_argument("--jobs", type=int, default=64, help="--batching: generations of the workload")
    p.add_argument("--only", choices=("static", "continuous"),
                   help="--batching: time one way only (for timing whole processes side by side, e.g. with farm-bench)")
    args = p.parse_args(argv)
    from transformers import AutoModelForCausalLM

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    cfg = preset(args.preset, **({"num_hidden_layers": args.layers} if args.layers else {}))
    with tempfile.TemporaryDirectory() as tmp:
        write_random_hf_checkpoint(tmp, cfg, dtype)
        ours = from_pretrained(tmp, initialize(tensor_parallel_size=1), dtype=dtype).eval()
        hf = AutoModelForCausalLM.from_pretrained(tmp, torch_dtype=dtype).to(device).eval()
    if args.batching:
        return _batching(args, ours, cfg, device)
    prompts = torch.randint(1, cfg.vocab_size, (args.batch, args.prompt_len), generator=torch.Generator().manual_seed(1))

    def run_ours():
        return generate(ours, prompts.tolist(), args.new_tokens, stop_ids=set(), batch_size=args.batch)

    ids = prompts.to(device)

    def run_hf():
        with torch.no_grad():
            return hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.new_tokens,
                               min_new_tokens=args.new_tokens, do_sample=False, cache_implementation="static",
                               pad_token_id=0, disable_compile=True)  # the eager baseline: no compile on CUDA

    same = sum(a == b for a, b in zip(run_ours(), run_hf()[:, args.prompt_len:].tolist()))
    tokens = args.batch * args.new_tokens
    ours_s, hf_s = _best_times([run_ours, run_hf], args.repeats)
    result = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "preset": args.preset, "layers": cfg.num_layers,
              "batch": args.batch, "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
              "threads": torch.get_num_threads(), "identical_sequences": same,
              "ours_tokens_per_s": tokens / ours_s, "transformers_static_tokens_per_s": tokens / hf_s}
    result["ratio"] = result["ours_tokens_per_s"] / result["transformers_static_tokens_per_s"]
    _report(result, args.json)
    return 0


def _report(result: dict, path: str | None) -> None:
    print(json.dumps(result, indent=2))
    if path:
        with atomic_file(path) as f:
            json.dump(result, f, indent=2)


def compare_generations(a: list[list[list[int]]], b: list[list[list[int]]]) -> dict:
    """How many generations two runs share token for token, and where the first that differs
    parts: job, token position, the token of each there (None where one had ended)."""
    pairs = [(x[0], y[0]) for x, y in zip(a, b)]
    first = None
    for job, (x, y) in enumerate(pairs):
        if x != y:
            at = next((i for i, (s, t) in enumerate(zip(x, y)) if s != t), min(len(x), len(y)))
            first = {"job": job, "position": at, "static": x[at] if at < len(x) else None,
                     "continuous": y[at] if at < len(y) else None}
            break
    return {"identical": sum(x == y for x, y in pairs), "first_divergence": first}


def _batching(args, model, cfg, device) -> int:
    prompts = torch.randint(1, cfg.vocab_size, (args.jobs, args.prompt_len),
                            generator=torch.Generator().manual_seed(1)).tolist()
    # stop tokens drawn with probability about 4 / new_tokens per step at temperature 1
    stops = set(range(1, 1 + max(1, round(4 * cfg.vocab_size / args.new_tokens))))
    outputs = {}

    def run(refill):
        def call():
            outputs[refill] = generate_samples(model, prompts, 1, args.new_tokens, stops, temperature=1.0, top_p=1.0,
                                               seed=0, batch_size=args.batch, refill=refill)
        return call

    if args.only:
        (seconds,) = _best_times([run(args.only == "continuous")], args.repeats)
        tokens = sum(len(g[0]) for g in outputs[args.only == "continuous"])
        _report({"batching": args.only, "generated_tokens": tokens, "tokens_per_s": tokens / seconds}, args.json)
        return 0
    static_s, continuous_s = _best_times([run(False), run(True)], args.repeats)
    agreement = compare_generations(outputs[False], outputs[True])
    if agreement["identical"] < args.jobs and device == "cpu":
        raise AssertionError(f"static and continuous batching generated different tokens in fp32 on CPU, where they "
                             f"must not: {agreement}")
    lengths = sorted(len(g[0]) for g in outputs[True])
    tokens = sum(lengths)
    result = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "preset": args.preset,
              "layers": cfg.num_layers, "jobs": args.jobs, "batch": args.batch, "prompt_len": args.prompt_len,
              "max_new_tokens": args.new_tokens, "threads": torch.get_num_threads(), "generated_tokens": tokens,
              "length_p50": lengths[len(lengths) // 2], "length_p90": lengths[int(0.9 * len(lengths))],
              "length_max": lengths[-1], "at_the_limit": sum(n == args.new_tokens for n in lengths),
              "identical_generations": agreement["identical"], "identical_share": agreement["identical"] / args.jobs,
              "first_divergence": agreement["first_divergence"], "static_tokens_per_s": tokens / static_s,
              "continuous_tokens_per_s": tokens / continuous_s}
    result["ratio"] = result["continuous_tokens_per_s"] / result["static_tokens_per_s"]
    _report(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
