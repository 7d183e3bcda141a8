#!/usr/bin/env python
"""A table like the paper's Table 2 from evaluate.py summaries.

    python tools/summary_table.py "SFT start=runs/sft/summary.json" "REDI a=0.8=runs/redi/summary.json"

Each argument is LABEL=SUMMARY.json (the last '=' splits). Prints a Markdown table of pass@1 with
its SEM and pass@k, in percent; --output also writes it to a file.
"""

import argparse
import json
import sys
from megatron_redi.cli import HelpFormatter


def table(rows: list[tuple[str, dict]]) -> str:
    k = rows[0][1]["samples"]
    lines = [f"| model | pass@1 (%) ± SEM, k={k} | pass@{k} (%) | problems |", "|---|---|---|---|"]
    for label, s in rows:
        sem = "n/a" if s["sem"] is None else f"{100 * s['sem']:.1f}"
        pass_k = s["pass@" + str(s["samples"])]
        lines.append(f"| {label} | {100 * s['pass@1']:.1f} ± {sem} | {100 * pass_k:.1f} | {s['problems']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("entries", nargs="+", help="LABEL=SUMMARY.json")
    p.add_argument("--output")
    args = p.parse_args(argv)
    rows = []
    for entry in args.entries:
        label, _, path = entry.rpartition("=")
        if not label:
            print(f"error: {entry!r} is not LABEL=SUMMARY.json", file=sys.stderr)
            return 2
        try:
            with open(path) as f:
                rows.append((label, json.load(f)))
        except (OSError, json.JSONDecodeError) as e:
            print(f"error: {path}: {e}", file=sys.stderr)
            return 2
    text = table(rows)
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
