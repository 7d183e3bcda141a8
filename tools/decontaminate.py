#!/usr/bin/env python
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
import re
import sys

from tqdm import tqdm

from megatron_redi.atomic import atomic_file, check_output
from megatron_redi.config import ConfigError
from megatron_redi.data.raw import RawDataError, count_rows, expand_inputs, local_inputs, read_rows
from megatron_redi.eval.runner import load_benchmark
from megatron_redi.cli import HelpFormatter, command, positive_int

WORD = re.compile(r"[a-z0-9]+")


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = WORD.findall(text.lower())
    if len(words) < n:
        return {tuple(words)} if words else set()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def decontaminate(inputs: list[str], benchmarks: list[str], n: int = 8, progress: bool = True) -> dict:
    index: dict[tuple[str, ...], list[tuple[str, int]]] = {}  # n-gram -> (benchmark, line)
    sizes = {}
    for path in benchmarks:
        problems = load_benchmark(path)
        sizes[path] = len(problems)
        for line, row in enumerate(problems, 1):
            for gram in ngrams(row["problem"], n):
                index.setdefault(gram, []).append((path, line))
    found = {path: [] for path in benchmarks}
    files = expand_inputs(inputs)
    rows = skipped = 0
    for raw in tqdm(read_rows(files), total=count_rows(files), desc="training problems", unit="row",
                    disable=not progress):
        if raw.row < 0:  # a whole file unread: its problems would silently count as clean
            raise RawDataError(f"{raw.file}: {raw.error}")
        if raw.record is None or not isinstance(raw.record.get("problem"), str):
            skipped += 1
            continue
        rows += 1
        seen = set()
        for gram in ngrams(raw.record["problem"], n):
            for path, line in index.get(gram, ()):
                if (path, line) not in seen:
                    seen.add((path, line))
                    found[path].append({"file": raw.file, "row": raw.row, "benchmark_line": line,
                                        "shared": " ".join(gram), "problem": raw.record["problem"][:200]})
    if not rows:  # an all-clear over nothing read would be false
        raise RawDataError(f"{', '.join(inputs)}: no training row with a 'problem' string was read "
                           f"({skipped} unreadable or without one)")
    return {"n": n, "training_rows": rows, "rows_skipped": skipped,
            "benchmarks": {path: {"problems": sizes[path], "overlapping_pairs": len(hits),
                                  "benchmark_problems_hit": len({h["benchmark_line"] for h in hits}),
                                  "overlaps": hits} for path, hits in found.items()}}


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
