"""Write one of the paper's five benchmarks as the evaluator's JSON lines {"problem", "answer", ...}.

    python tools/prepare_benchmarks.py math500 --output benchmarks/math500.jsonl
    python tools/prepare_benchmarks.py olympiadbench --output o.jsonl --source ~/hf/OlympiadBench

NAME is one of math500 (HuggingFaceH4/MATH-500, 500 problems), aime24 (HuggingFaceH4/aime_2024, 30),
amc23 (math-ai/amc23, 40), minerva (math-ai/minervamath, 272) and olympiadbench
(Hothan/OlympiadBench, config OE_TO_maths_en_COMP, 675). Without --source the Hub dataset is read
through `datasets` (a network is needed); --source is a local copy: a data file (JSON lines,
parquet, Arrow), a directory saved by `datasets`, or a download of the dataset repository
(huggingface-cli download REPO --repo-type dataset --local-dir DIR). The row count must be the
known one. Answers become strings: OlympiadBench's lists joined by ", ", AMC23's whole floats as
integers. Other scalar columns (level, subject, id) are kept in each line.
"""

import argparse
import json
import sys

from megatron_redi.atomic import atomic_file, check_output
from megatron_redi.cli import HelpFormatter, command
from megatron_redi.eval.benchmarks import BENCHMARKS, prepare


@command
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("name", choices=sorted(BENCHMARKS))
    p.add_argument("--output", required=True, help="FILE.jsonl")
    p.add_argument("--source", help="a local copy of the dataset (default: the Hub)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    args = p.parse_args(argv)
    check_output(args.output, args.overwrite, keep=(args.source,) if args.source else ())
    rows = prepare(args.name, args.source)
    with atomic_file(args.output) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{args.name}: {len(rows)} problems -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
