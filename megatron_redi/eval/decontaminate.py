"""Overlap between training problems and benchmark problems: every benchmark problem that shares
an n-gram (8 words by default, lower-cased) with a training problem, reported with both lines.
tools/decontaminate.py is its command line."""

from __future__ import annotations

import re

from tqdm import tqdm

from ..data.raw import RawDataError, count_rows, expand_inputs, read_rows
from .runner import load_benchmark

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
