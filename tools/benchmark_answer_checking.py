#!/usr/bin/env python
"""Answers checked per second: the generations of an evaluation's results file scored again.

    python tools/benchmark_answer_checking.py eval/redi/final/math500.jsonl --checker rllm

RESULTS is what tools/evaluate.py writes per benchmark (LABEL/NAME.jsonl: one row per problem with
its "answer" and "generations"). Every generation is scored with --checker as evaluate scores it;
the time, the answers per second and the share found correct are printed. For comparing the
checkers' cost before and after a change (run it under farm-bench, A B A B).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from megatron_redi.cli import HelpFormatter, command
from megatron_redi.eval.answers import CHECKERS
from megatron_redi.eval.protocol import Protocol
from megatron_redi.eval.runner import score


@command
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("results", help="an evaluation's NAME.jsonl")
    parser.add_argument("--checker", choices=CHECKERS, default="rllm")
    args = parser.parse_args(argv)
    with open(args.results) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    samples = len(rows[0]["generations"])
    protocol = Protocol(samples=samples, checker=args.checker)
    problems = [{"problem": r.get("problem", ""), "answer": r["answer"]} for r in rows]
    start = time.perf_counter()
    results, summary = score(problems, [r["generations"] for r in rows], [r.get("lengths", [0] * samples) for r in rows],
                             protocol)
    elapsed = time.perf_counter() - start
    answers = samples * len(rows)
    right = sum(sum(r["correct"]) for r in results)
    print(f"{answers} answers by {args.checker} in {elapsed:.2f} s: {answers / elapsed:,.0f} answers/s, "
          f"{right / answers:.1%} correct, {summary.get('bounded_answers', 0)} bounded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
