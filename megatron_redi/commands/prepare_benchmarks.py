"""Write one of the paper's benchmarks as the evaluator's JSON lines {"problem", "answer", ...}.

    python tools/prepare_benchmarks.py math500 --output benchmarks/math500.jsonl
    python tools/prepare_benchmarks.py olympiadbench --output o.jsonl --source ~/hf/OlympiadBench
    python tools/prepare_benchmarks.py minerva --output m.jsonl --source rllm/data/test/math/minerva.json

Without --source the Hub dataset is read through `datasets` (a network is needed); --source is a
local copy: a data file (JSON lines, a JSON array, parquet, Arrow), a directory saved by `datasets`,
a download of the dataset repository (huggingface-cli download REPO --repo-type dataset --local-dir
DIR), or rllm's test set of the benchmark (rllm/data/test/math/NAME.json, the answer key the
paper's reference scored against: Minerva's answers there are lists of accepted forms). The row
count must be the known one. Answers are kept as written ($ included); lists of answers stay lists
(any one is right); AMC's whole floats become integers. Other scalar columns (level, subject, id)
are kept in each line. NAME is one of (from the benchmark table):
"""

import argparse
import json
import sys

from megatron_redi.atomic import atomic_file, check_output
from megatron_redi.cli import HelpFormatter, command
from megatron_redi.eval import load_benchmark
from megatron_redi.eval.benchmarks import BENCHMARKS, describe, key_differences, prepare


@command
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__ + describe(), formatter_class=HelpFormatter)
    p.add_argument("name", choices=sorted(BENCHMARKS))
    p.add_argument("--output", required=True, help="FILE.jsonl")
    p.add_argument("--source", help="a local copy of the dataset (default: the Hub)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--compare-with", metavar="FILE.jsonl",
                   help="another key of the same benchmark (e.g. the Hub's against rllm's): say how far they differ")
    args = p.parse_args(argv)
    check_output(args.output, args.overwrite, keep=tuple(p for p in (args.source, args.compare_with) if p))
    rows = prepare(args.name, args.source)
    with atomic_file(args.output) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{args.name}: {len(rows)} problems -> {args.output}")
    if args.compare_with:
        d = key_differences(rows, load_benchmark(args.compare_with))
        print(f"against {args.compare_with}: {d['in_both']} of the {d['problems']} problems in both, "
              f"{d['written_differently']} with their answers written differently, {d['refused_by_rllm']} of "
              f"which the rllm grader refuses (its first answer boxed, against this key)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
