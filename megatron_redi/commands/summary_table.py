"""A table like the paper's Table 2 from tools/evaluate.py outputs: one row per run, at its best
checkpoint, with pass@1 ± SEM per benchmark and their mean.

    python tools/summary_table.py "SFT=eval/sft" "REDI alpha 0.8=eval/redi" --output table.md

Each argument is LABEL=DIR, DIR an --output directory of tools/evaluate.py (the last '=' splits).
With one benchmark the table also gives pass@k and the number of problems; where a directory holds
several checkpoints, the row names the one selected. Figures in percent; --output also writes the
table to a file. --paper NAME ... adds the paper's own rows for comparison (its Tables 1, 2 and 4,
from megatron_redi/eval/paper_results.py, which names them).
"""

import argparse
import os
import sys

from megatron_redi.atomic import atomic_file, check_output
from megatron_redi.cli import HelpFormatter, command
from megatron_redi.settings import ConfigError, load_json
from megatron_redi.eval.paper_results import BENCHMARK_NAMES, PAPER_ROWS


def _percent(s: dict) -> str:
    sem = "n/a" if s["sem"] is None else f"{100 * s['sem']:.1f}"
    return f"{100 * s['pass@1']:.1f} ± {sem}"


def _paper_cells(name: str, names: list[str]) -> list[str]:
    """The paper's row under this table's columns ("-" where it has no figure)."""
    row = PAPER_ROWS[name]

    def cell(value):
        return "-" if value is None else f"{value[0]:.1f}" + ("" if value[1] is None else f" ± {value[1]:.1f}")

    cells = [cell(row["benchmarks"].get(n)) for n in names]
    if len(names) > 1:  # the paper's average is over its five benchmarks
        cells.append(cell(row["average"] if sorted(names) == sorted(BENCHMARK_NAMES) else None))
    else:
        cells += ["-", "-"]
    return cells


def table(rows: list[tuple[str, dict]], paper: tuple[str, ...] = ()) -> str:
    names = list(rows[0][1]["checkpoints"][0]["benchmarks"])
    k = rows[0][1]["protocol"]["samples"]
    several = any(len(summary["checkpoints"]) > 1 for _, summary in rows)
    header = ["model"] + (["checkpoint"] if several else []) + [f"{n} pass@1 (%) ± SEM, k={k}" for n in names]
    header += ["Avg."] if len(names) > 1 else [f"pass@{k} (%)", "problems"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, summary in rows:
        chosen = next(e for e in summary["checkpoints"] if e["label"] == summary["best"]["label"])
        results = chosen["benchmarks"]
        missing = set(names) ^ set(results)
        if missing:
            raise ConfigError(f"{label}: benchmarks differ from the first row's ({', '.join(sorted(missing))})")
        cells = [label] + ([f"{chosen['label']} (step {chosen['step']})"] if several else [])
        cells += [_percent(results[n]) for n in names]
        if len(names) > 1:
            cells.append(f"{100 * sum(results[n]['pass@1'] for n in names) / len(names):.1f}")
        else:
            s = results[names[0]]
            cells += [f"{100 * s[f'pass@{k}']:.1f}", str(s["problems"])]
        lines.append("| " + " | ".join(cells) + " |")
    for name in paper:
        cells = [f"paper: {name}"] + (["best"] if several else []) + _paper_cells(name, names)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


@command
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("entries", nargs="+", help="LABEL=DIR")
    p.add_argument("--paper", nargs="+", default=[], metavar="NAME", help="the paper's rows to add, by name")
    p.add_argument("--output")
    args = p.parse_args(argv)
    unknown = [n for n in args.paper if n not in PAPER_ROWS]
    if unknown:
        raise ConfigError(f"--paper {', '.join(map(repr, unknown))}: not a row of the paper's; its rows: "
                          f"{', '.join(map(repr, PAPER_ROWS))}")
    entries = [entry.rpartition("=") for entry in args.entries]
    for entry, (label, _, _) in zip(args.entries, entries):
        if not label:
            raise ConfigError(f"{entry!r} is not LABEL=DIR")
    if args.output:
        check_output(args.output, overwrite=True, keep=tuple(path for _, _, path in entries))
    rows = []
    for label, _, path in entries:
        file = os.path.join(path, "summary.json")
        summary = load_json(file, ConfigError)
        if not isinstance(summary, dict) or not {"checkpoints", "best", "protocol"} <= summary.keys():
            raise ConfigError(f"{file}: not a summary written by tools/evaluate.py")
        rows.append((label, summary))
    text = table(rows, tuple(args.paper))
    print(text)
    if args.output:
        with atomic_file(args.output) as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
