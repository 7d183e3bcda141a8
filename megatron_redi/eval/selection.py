"""Best-checkpoint selection, as the paper reports its runs: each configuration is represented by
its best checkpoint, the one with the highest test accuracy.

An entry is one evaluated checkpoint::

    {"label": "step_00000400", "checkpoint": PATH, "step": 400,
     "benchmarks": {"math500": {"pass@1": .., "sem": .., ...}, "aime24": {...}}}

Its score is the mean pass@1 over its benchmarks (the paper's "Avg." column), or one benchmark's
pass@1 with ``by`` (the paper's intermediate evaluations selected on MATH-500 alone). Ties go to the
earlier step: no more training than the score needs.
"""

from __future__ import annotations

import sys

from ..atomic import atomic_file
from ..settings import ConfigError


def score(entry: dict, by: str | None = None) -> float:
    results = entry["benchmarks"]
    if by is not None:
        if by not in results:
            raise ConfigError(f"{entry['label']}: no result for benchmark {by!r} (has {', '.join(results)})")
        return results[by]["pass@1"]
    return sum(r["pass@1"] for r in results.values()) / len(results)


def best(entries: list[dict], by: str | None = None) -> dict:
    """The selected entry's label, checkpoint, step and score, and what it was selected by."""
    if not entries:
        raise ValueError("no evaluated checkpoints to select from")
    order = sorted(range(len(entries)), key=lambda i: (entries[i]["step"] is None, entries[i]["step"] or 0, i))
    top = max(order, key=lambda i: score(entries[i], by))  # max keeps the first of equals: the earliest
    e = entries[top]
    return {"label": e["label"], "checkpoint": e["checkpoint"], "step": e["step"], "score": score(e, by),
            "selected_by": f"pass@1 on {by}" if by else "mean pass@1 over the benchmarks"}


def plot(entries: list[dict], chosen: dict, path: str) -> None:
    """pass@1 (%) against the training step, one line per benchmark with SEM bars, the mean dashed,
    the selected step marked. Without matplotlib the curve is left out, said in one line: the
    results it would draw are written already."""
    try:
        import matplotlib
    except ImportError:
        print(f"{path} not drawn: matplotlib is not installed (pip install matplotlib); the results are kept",
              file=sys.stderr)
        return

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = sorted((e for e in entries if e["step"] is not None), key=lambda e: e["step"])
    steps = [e["step"] for e in entries]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in entries[0]["benchmarks"]:
        values = [100 * e["benchmarks"][name]["pass@1"] for e in entries]
        sems = [100 * (e["benchmarks"][name]["sem"] or 0) for e in entries]
        ax.errorbar(steps, values, yerr=sems, marker="o", capsize=3, label=name)
    if len(entries[0]["benchmarks"]) > 1:
        ax.plot(steps, [100 * score(e) for e in entries], "k--", label="mean")
    if chosen["step"] is not None:
        ax.axvline(chosen["step"], color="grey", alpha=0.5, label=f"selected: step {chosen['step']}")
    ax.set_xlabel("training step")
    ax.set_ylabel("pass@1 (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)
