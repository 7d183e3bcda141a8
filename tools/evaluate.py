#!/usr/bin/env python
"""Evaluate a checkpoint on a local benchmark: pass@1 over k samples with its SEM, and pass@k.

    python tools/evaluate.py --checkpoint ckpt/hf --benchmark math500.jsonl --samples 4 \\
        --output results.jsonl --summary summary.json --max-new-tokens 4096
    torchrun --nproc-per-node 8 tools/evaluate.py --tp 2 ...     (TP x DP: problems split over DP)

The checkpoint is an HF or native directory (its tokenizer files beside the weights, or
--tokenizer). The benchmark is JSON lines of {"problem", "answer"}. Sampling defaults to the
paper's (temperature 0.6, top-p 0.95); --greedy decodes greedily. --prompt chooses the chat
template with the problem as the user turn (chat), the paper's LightEval math prompt inside the
chat template (lighteval), or the bare problem (raw); --force-think starts every answer with
<think>. RESULTS has one line per problem with its `correct` list; SUMMARY holds pass@1, sem
(sample standard deviation of the k per-sample scores over sqrt(k)) and pass@k.
"""

import argparse
import json
import sys

import torch

from megatron_redi.checkpoint.hf_mapping import CheckpointError
from megatron_redi.config import COMPUTE_DTYPES, DTYPES, ConfigError, local_directory
from megatron_redi.eval import BenchmarkError, evaluate, load_benchmark
from megatron_redi.eval.runner import PROMPT_STYLES
from megatron_redi.model import from_pretrained
from megatron_redi.parallel import initialize
from megatron_redi.cli import HelpFormatter


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--benchmark", required=True)
    p.add_argument("--samples", type=int, default=1)
    p.add_argument("--output", required=True, help="RESULTS.jsonl")
    p.add_argument("--summary", required=True, help="SUMMARY.json")
    p.add_argument("--max-new-tokens", type=int, default=1024)
    p.add_argument("--temperature", type=float, default=0.6)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--greedy", action="store_true")
    p.add_argument("--prompt", choices=PROMPT_STYLES, default="chat")
    p.add_argument("--force-think", action="store_true")
    p.add_argument("--tokenizer", help="default: the checkpoint directory")
    p.add_argument("--tp", type=int, default=1)
    p.add_argument("--dtype", choices=COMPUTE_DTYPES, default="bf16" if torch.cuda.is_available() else "fp32")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-problems", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bar (generations, tokens/s, ETA)")
    args = p.parse_args(argv)
    try:
        from transformers import AutoTokenizer

        tokenizer_dir = local_directory(args.tokenizer or args.checkpoint, "the tokenizer")  # before anything slow
        problems = load_benchmark(args.benchmark, args.max_problems)
        parallel = initialize(tensor_parallel_size=args.tp)
        model = from_pretrained(args.checkpoint, parallel, dtype=DTYPES[args.dtype])
        model.eval()
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    except (BenchmarkError, CheckpointError, ConfigError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    results, summary = evaluate(model, tokenizer, problems, args.samples, args.max_new_tokens,
                                0.0 if args.greedy else args.temperature, args.top_p, args.prompt, args.force_think,
                                args.seed, args.batch_size, progress=not args.no_progress)
    if parallel.rank == 0:
        with open(args.output, "w") as f:
            for r in results:
                f.write(json.dumps(r) + "\n")
        summary.update(checkpoint=args.checkpoint, benchmark=args.benchmark, greedy=args.greedy,
                       temperature=0.0 if args.greedy else args.temperature, top_p=args.top_p, prompt=args.prompt)
        with open(args.summary, "w") as f:
            json.dump(summary, f, indent=2)
        sem = "n/a" if summary["sem"] is None else f"{100 * summary['sem']:.1f}"
        print(f"pass@1 {100 * summary['pass@1']:.1f} ± {sem} (SEM, k={args.samples}), "
              f"pass@{args.samples} {100 * summary[f'pass@{args.samples}']:.1f}, {len(results)} problems")
    return 0


if __name__ == "__main__":
    sys.exit(main())
