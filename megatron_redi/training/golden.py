"""Golden values: the demo's first steps as tools/golden_steps.py records them, and the comparison
that says whether a change kept training as it was (bit for bit, or within a tolerance)."""

from __future__ import annotations

SERIES = {"sft": ("loss", "grad_norm", "update_norm"),
          "redi": ("loss", "logps/chosen_mean", "logps/rejected_mean", "grad_norm", "update_norm")}


def compare(got: dict, want: dict, tolerance: float) -> bool:
    ok = True
    for run_name, keys in SERIES.items():
        for key in keys:
            a, b = got[run_name][key], want[run_name][key]
            worst = max((abs(x - y) for x, y in zip(a, b)), default=0.0) if len(a) == len(b) else float("inf")
            same = "bit-identical" if a == b else f"max |diff| {worst:.3e}"
            print(f"  {run_name:4s} {key:20s} {len(a):3d} steps: {same}")
            ok &= worst <= tolerance
    for run_name, digest in got["weights_sha256"].items():
        same = digest == want["weights_sha256"][run_name]
        print(f"  {run_name:4s} final weights and AdamW moments: {'bit-identical' if same else 'DIFFERENT'}")
        ok &= same or tolerance > 0
    print(f"  parity (TP=2 + SP vs transformers, max |logit diff|): {got['parity_max_abs_diff']} "
          f"(recorded: {want['parity_max_abs_diff']})")
    return ok
