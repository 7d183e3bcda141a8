"""Which training problems share word n-grams with evaluation benchmarks: a report, no data changed.

    python tools/decontaminate.py --input raw/*.parquet --benchmark math500.jsonl aime24.jsonl \
        --output decontamination.json [--n 8]

Reads the training rows (the same inputs as tools/preprocess_data.py: jsonl, parquet, arrow, saved
datasets) and benchmark files (JSON lines with a "problem"), normalises each problem (lower case,
words of letters and digits), and lists every training problem that shares at least one n-gram of
n consecutive words (8 by default, as the paper's reference implementation) with a benchmark
problem: per benchmark, the overlapping pairs (training file and row, benchmark line, one shared
n-gram) and their count. Problems shorter than n words are compared whole. The output is JSON; the
summary is printed. Rows are streamed: memory holds the benchmarks' n-grams, not the corpus.
"""

from __future__ import annotations

import argparse
import json
import sys

from megatron_redi.atomic import atomic_file, check_output
from megatron_redi.settings import ConfigError
from megatron_redi.data.raw import local_inputs
from megatron_redi.eval.decontaminate import decontaminate
from megatron_redi.cli import HelpFormatter, command, positive_int

@command
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--input", nargs="+", required=True, help="training rows: files, globs or saved datasets")
    p.add_argument("--benchmark", nargs="+", required=True, help="benchmark JSONL files with a 'problem' field")
    p.add_argument("--output", required=True, help="the JSON report")
    p.add_argument("--n", type=positive_int, default=8, help="words per n-gram (default: %(default)s, as the reference)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.n < 1:
        raise ConfigError("--n must be at least 1")
    check_output(args.output, overwrite=True, keep=local_inputs(args.input) + tuple(args.benchmark))
    report = decontaminate(args.input, args.benchmark, args.n, progress=not args.no_progress)
    with atomic_file(args.output) as f:
        json.dump(report, f, indent=1)
    for path, b in report["benchmarks"].items():
        print(f"{path}: {b['benchmark_problems_hit']} of {b['problems']} problems share a {report['n']}-gram with "
              f"the training problems ({b['overlapping_pairs']} pairs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
