#!/usr/bin/env python
"""Evaluate a checkpoint on a local benchmark as the paper did: pass@1 over k samples with its SEM,
and pass@k.

    python tools/evaluate.py --checkpoint runs/redi/hf --benchmark math500.jsonl \
        --output results.jsonl --summary summary.json
    torchrun --nproc-per-node 8 tools/evaluate.py --tp 2 ...     (TP x DP: problems split over DP)

The defaults are the paper's protocol (Appendix C.5): k = 16 samples at temperature 0.6 and top-p
0.95, up to 32,768 new tokens, the LightEval math prompt inside the chat template, "<think>" forced
as the start of the answer, and the SEM from the population standard deviation of the k per-sample
scores over sqrt(k), as the reference computed it (--sem-ddof 1: the sample standard deviation).
Each can be changed (--greedy decodes greedily; --prompt chat or raw; --no-force-think), and the
summary records the protocol it ran. The checkpoint is an HF or native directory (its tokenizer
files beside the weights, or --tokenizer); the benchmark is JSON lines of {"problem", "answer"}.
RESULTS has one line per problem with its `correct` list; SUMMARY holds pass@1, sem, pass@k and the
protocol.
"""

import argparse
import json
import sys

import torch

from megatron_redi.checkpoint.hf_mapping import CheckpointError
from megatron_redi.config import COMPUTE_DTYPES, DTYPES, ConfigError, local_directory
from megatron_redi.eval import BenchmarkError, evaluate, load_benchmark
from megatron_redi.eval.protocol import PROMPT_STYLES, Protocol
from megatron_redi.model import from_pretrained
from megatron_redi.parallel import initialize
from megatron_redi.cli import HelpFormatter


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--benchmark", required=True)
    paper = Protocol()
    p.add_argument("--samples", type=int, default=paper.samples, help="k generations per problem")
    p.add_argument("--output", required=True, help="RESULTS.jsonl")
    p.add_argument("--summary", required=True, help="SUMMARY.json")
    p.add_argument("--max-new-tokens", type=int, default=paper.max_new_tokens)
    p.add_argument("--temperature", type=float, default=paper.temperature)
    p.add_argument("--top-p", type=float, default=paper.top_p)
    p.add_argument("--greedy", action="store_true", help="temperature 0")
    p.add_argument("--prompt", choices=PROMPT_STYLES, default=paper.prompt)
    p.add_argument("--no-force-think", dest="force_think", action="store_false",
                   help='do not start the answer with "<think>"')
    p.add_argument("--sem-ddof", type=int, choices=(0, 1), default=paper.sem_ddof,
                   help="the SEM's standard deviation: 0 population (the reference's), 1 sample")
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
    protocol = Protocol(samples=args.samples, temperature=0.0 if args.greedy else args.temperature,
                        top_p=args.top_p, max_new_tokens=args.max_new_tokens, prompt=args.prompt,
                        force_think=args.force_think, sem_ddof=args.sem_ddof)
    results, summary = evaluate(model, tokenizer, problems, protocol, args.seed, args.batch_size,
                                progress=not args.no_progress)
    if parallel.rank == 0:
        with open(args.output, "w") as f:
            for r in results:
                f.write(json.dumps(r) + "\n")
        summary.update(checkpoint=args.checkpoint, benchmark=args.benchmark)
        with open(args.summary, "w") as f:
            json.dump(summary, f, indent=2)
        sem = "n/a" if summary["sem"] is None else f"{100 * summary['sem']:.1f}"
        print(f"pass@1 {100 * summary['pass@1']:.1f} ± {sem} (SEM, k={args.samples}), "
              f"pass@{args.samples} {100 * summary[f'pass@{args.samples}']:.1f}, {len(results)} problems")
    return 0


if __name__ == "__main__":
    sys.exit(main())
