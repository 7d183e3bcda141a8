"""The embedded default's data: a synthetic teacher corpus, a held-out benchmark, a tokenizer.

    python tools/make_synthetic_traces.py --output-dir data/synthetic --rows 3000

Writes traces.jsonl (OpenR1-Math-Raw schema: digit-by-digit additions, several teacher generations
per problem, some with a planted slip, noisy verifier labels), benchmark.jsonl (held-out
problem/answer lines), and tokenizer/ (a small BPE with a Qwen-style chat template).
"""

import argparse
import sys
import os

from megatron_redi.data import synthetic
from megatron_redi.fixtures import make_tiny_tokenizer
from megatron_redi.cli import HelpFormatter, command, positive_int


@command
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--rows", type=positive_int, default=3000)
    p.add_argument("--benchmark-problems", type=positive_int, default=200)
    p.add_argument("--digits", type=positive_int, default=5)
    p.add_argument("--generations", type=positive_int, default=4)
    p.add_argument("--p-correct", type=float, default=0.6, help="chance that a teacher generation is right")
    p.add_argument("--vocab-size", type=positive_int, default=512)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    os.makedirs(args.output_dir, exist_ok=True)
    synthetic.write_corpus(os.path.join(args.output_dir, "traces.jsonl"), args.rows, args.digits,
                           args.generations, args.p_correct, args.seed)
    synthetic.write_benchmark(os.path.join(args.output_dir, "benchmark.jsonl"), args.benchmark_problems,
                              args.digits, args.seed + 1)
    make_tiny_tokenizer(os.path.join(args.output_dir, "tokenizer"), args.vocab_size,
                        texts=synthetic.tokenizer_corpus(args.digits))
    print(f"{args.output_dir}: {args.rows} rows, {args.benchmark_problems} benchmark problems, tokenizer")


if __name__ == "__main__":
    sys.exit(main())
