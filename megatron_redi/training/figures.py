"""The panels of the paper's Figure 6 from runs' metrics.jsonl: evaluation pass@1, chosen and
rejected LogPS, the update size, against the optimizer step (tools/plot_metrics.py draws them)."""

from __future__ import annotations

import json
import os

from ..atomic import atomic_file
from .metrics import read_metrics

# metric, panel title, y-axis label
PANELS = [("eval/pass@1", "in-training accuracy", "pass@1 (fraction correct)"),
          ("logps/chosen_mean", "chosen LogPS", "nats per response token"),
          ("logps/rejected_mean", "rejected LogPS", "nats per response token"),
          ("update_norm", "update size", "||Δθ|| per step (L2, fp32 weights)")]


def eval_protocol(run: str) -> str:
    """What the run's in-training accuracy measured, from its config.json."""
    try:
        with open(os.path.join(run, "config.json")) as f:
            e = json.load(f)["eval"]
    except (OSError, KeyError, ValueError):
        return ""
    how = "greedy" if not e.get("temperature") else f"T {e['temperature']}, {e.get('samples', 1)} samples"
    return f"{how}, {e['max_problems']} problems" if e.get("max_problems") else how


def plot(runs: list[str], labels: list[str], output: str, smooth: int = 1) -> list[str]:
    """Draw the panels into ``output``; returns their titles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = [read_metrics(r) for r in runs]
    panels = [p for p in PANELS if any(p[0] in row for rows in data for row in rows)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.6), squeeze=False)
    protocols = {eval_protocol(r) for r in runs if os.path.isdir(r)} - {""}
    titles = []
    for ax, (key, title, unit) in zip(axes[0], panels):
        for rows, label in zip(data, labels):
            points = [(r["step"], r[key]) for r in rows if key in r and r[key] is not None]
            if not points:
                continue
            steps, values = zip(*points)
            if smooth > 1 and key != "eval/pass@1":
                values = [sum(values[max(0, i - smooth + 1):i + 1]) / len(values[max(0, i - smooth + 1):i + 1])
                          for i in range(len(values))]
            line, = ax.plot(steps, values, label=label, marker="o" if key == "eval/pass@1" else None, linewidth=1.4)
            alarm = next((r["step"] for r in rows if r.get("collapse_alarm")), None)
            if alarm is not None and key.startswith("logps/"):
                ax.axvline(alarm, color=line.get_color(), linestyle=":", linewidth=1.2)
                ax.annotate("collapse alarm", (alarm, ax.get_ylim()[1]), fontsize=7, color=line.get_color(),
                            rotation=90, va="top", ha="right")
        if key == "eval/pass@1" and len(protocols) == 1:
            title += f" ({protocols.pop()})"
        elif smooth > 1 and key != "eval/pass@1":
            title += f" ({smooth}-step moving average)"
        ax.set_title(title, fontsize=10)
        titles.append(title)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    with atomic_file(output, "wb") as f:
        fig.savefig(f, format=os.path.splitext(output)[1][1:] or "png", dpi=120)
    return titles
