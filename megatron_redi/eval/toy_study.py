"""The toy study's decision rules (docs/toy_study.md), registered before its runs: when stage 2
starts, whether REDI helps, whether the explanation holds, and the tables that report them.
tools/toy_study.py runs the study and applies them; the tests check them here, by name."""

from __future__ import annotations

import statistics

KINDS = ("planted", "sibling", "own_t0.6", "own_greedy")  # the negatives' kinds
ALPHAS = (0.0, 0.8, 1.0)


def plateau_epoch(curve: list[tuple[int, float]], rule: str) -> int:
    """Stage 2's start on stage 1's per-epoch validation curve [(epoch, pass@1), ...].
    registered (run 1): the first epoch from the third on, starting at half the run's best or more,
    that adds under 0.5 point.  settled (run 2): the first epoch from which the curve stays within
    0.5 point of its best, so that neither a dip nor a lucky epoch decides."""
    if rule == "settled":
        return next(e for i, (e, _) in enumerate(curve)
                    if min(a for _, a in curve[i:]) >= max(a for _, a in curve[i:]) - 0.5)
    half = max(acc for _, acc in curve) / 2  # before it, a slow start is not a plateau
    return next((e for (e, acc), (_, before) in zip(curve[1:], curve) if e >= 3 and before >= half
                 and acc - before < 0.5), curve[-1][0])


def verdict(results: list[dict], lrs, kinds) -> dict:
    """The pre-registered rule (docs/toy_study.md), cell by cell."""
    def cell(arm, kind, lr):
        values = [r["pass@1"] for r in results if r["arm"] == arm and r["kind"] == kind and r["lr"] == lr]
        return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0

    out = {}
    for kind in kinds:
        per_lr = {}
        for lr in lrs:
            redi, a0, sft = cell("alpha 0.8", kind, lr), cell("alpha 0.0", kind, lr), cell("more SFT", None, lr)
            control = max(a0, sft)
            gain = redi[0] - control[0]
            per_lr[f"{lr:g}"] = {"gain": gain, "helps": gain > 1 and gain > 2 * max(redi[1], control[1]),
                                 "alpha0.8_minus_alpha0": redi[0] - a0[0], "larger_std": max(redi[1], a0[1])}
        out[kind] = {"by_lr": per_lr, "helps": sum(v["helps"] for v in per_lr.values()) >= 2}
    return out


def mechanism(slips: dict, decoys: dict) -> dict:
    """The registered test of the explanation: is alpha 0.8 minus alpha 0 higher with decoy negatives
    (task B's results.json) than with slips (task A's), at the same learning rate, by more than 2 x
    the larger seed std? Only the kinds that are decoys in task B test it (the amendment: planted)."""
    out = {}
    for kind, diagnostics in decoys["negatives"].items():
        per_lr = {}
        for lr, b in decoys["verdict"][kind]["by_lr"].items():
            a = slips["verdict"][kind]["by_lr"][lr]
            difference, std = b["alpha0.8_minus_alpha0"] - a["alpha0.8_minus_alpha0"], max(a["larger_std"], b["larger_std"])
            per_lr[lr] = {"slips": a["alpha0.8_minus_alpha0"], "decoys": b["alpha0.8_minus_alpha0"],
                          "difference": difference, "larger_std": std, "holds": difference > 2 * std}
        out[kind] = {"by_lr": per_lr, "decoys": diagnostics["decoy_share"] >= 0.5,
                     "supports": sum(v["holds"] for v in per_lr.values()) >= 2}
    return out


def mechanism_table(comparison: dict) -> str:
    lines = ["| negatives | lr | alpha 0.8 - alpha 0, slips (A) | the same, task B | difference | larger std | holds |",
             "|---|---|---|---|---|---|---|"]
    for kind, v in comparison.items():
        name = kind + ("" if v["decoys"] else " (slips in B too: not a test)")
        lines += [f"| {name} | {lr} | {x['slips']:+.1f} | {x['decoys']:+.1f} | {x['difference']:+.1f} | "
                  f"{x['larger_std']:.1f} | {'yes' if x['holds'] else 'no'} |" for lr, x in v["by_lr"].items()]
    tested = [k for k, v in comparison.items() if v["decoys"]]
    supports = any(comparison[k]["supports"] for k in tested)
    return "\n".join(lines + ["", f"The explanation is {'supported' if supports else 'not supported'} "
                               f"(decoy kinds: {', '.join(tested) or 'none'})."])


def table(results, lrs) -> str:
    lines = ["| arm | negatives | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " |", "|---|---|" + "---|" * len(lrs)]
    arms = [("more SFT", None)] + [(f"alpha {a}", k) for k in KINDS for a in ALPHAS]
    for arm, kind in arms:
        if not any(r["arm"] == arm and r["kind"] == kind for r in results):
            continue
        cells = []
        for lr in lrs:
            values = [r["pass@1"] for r in results if r["arm"] == arm and r["kind"] == kind and r["lr"] == lr]
            sems = [r["sem"] for r in results if r["arm"] == arm and r["kind"] == kind and r["lr"] == lr]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.1f} ± {std:.1f} (SEM {max(sems):.1f})")
        lines.append(f"| {arm} | {kind or 'all problems'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
