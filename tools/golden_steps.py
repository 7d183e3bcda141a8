#!/usr/bin/env python
"""Golden values: the first steps of the demo's SFT and REDI runs, to show that a change keeps
training as it was (bit for bit where the arithmetic is unchanged).

    python tools/golden_steps.py --output before.json                 (record)
    python tools/golden_steps.py --output after.json --compare before.json

Runs the demo's data (examples/run_redi_tiny.sh: the same corpus, tokenizer and student), then
--sft-steps steps of stage 1 and, from that checkpoint, --redi-steps steps of REDI alpha 0.8, both
at TP=2 with sequence parallelism over 2 CPU processes, and records each step's loss, gradient and
update norms (and the chosen / rejected LogPS of REDI) as metrics.jsonl holds them (8 decimals), a
digest of each run's final weights and AdamW moments (bit for bit), and the TP=2 forward's largest
logit difference from transformers (examples/parity_demo.py). --compare prints the largest
difference from a recorded file per series and exits 1 if any exceeds --tolerance (0: bit for bit).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile

import torch
from safetensors.torch import load_file

from megatron_redi.atomic import atomic_file, check_output
from megatron_redi.cli import HelpFormatter, command, positive_int
from megatron_redi.training.golden import SERIES, compare
from megatron_redi.training.metrics import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def run(cmd: list[str]) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore",
               PYTHONPATH=ROOT)  # this checkout's package, whatever is installed
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return done.stdout


def train(work: str, name: str, config: str, steps: int, *overrides: str) -> list[dict]:
    out = os.path.join(work, name)
    run(["torchrun", "--nproc-per-node", "2", "-m", "megatron_redi.train", "--config", config,
         "--data.path", os.path.join(work, "data", "tokenized"), "--train.output_dir", out,
         "--train.max_steps", str(steps), "--train.progress", "false", "--train.tensorboard", "false",
         "--checkpoint.resume", "false", *overrides])
    return read_metrics(out)


def weights_digest(run_dir: str) -> str:
    """sha256 over the final checkpoint's fp32 master weights and AdamW moments: equal digests
    mean bit-identical training. The generators' states are left out: they are not weights, and
    they move with any change in what draws random numbers before training (a model built on the
    meta device draws none)."""
    h = hashlib.sha256()
    last = sorted(glob.glob(os.path.join(run_dir, "checkpoints", "step_*")))[-1]
    for file in sorted(glob.glob(os.path.join(last, "**", "*.safetensors"), recursive=True)):
        if os.path.basename(file).startswith("rng_"):
            continue
        # the tensors, not the file's bytes: how a writer orders its header is not training
        tensors = load_file(file)
        for name in sorted(tensors):
            t = tensors[name]
            h.update(f"{os.path.relpath(file, last)}:{name}:{t.dtype}:{list(t.shape)}".encode())
            h.update(t.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def record(work: str, sft_steps: int, redi_steps: int) -> dict:
    py = sys.executable
    data = os.path.join(work, "data")
    run([py, "tools/make_synthetic_traces.py", "--output-dir", data, "--rows", "4000",
         "--benchmark-problems", "200", "--digits", "5", "--seed", "0"])
    run([py, "tools/preprocess_data.py", "--input", os.path.join(data, "traces.jsonl"), "--tokenizer",
         os.path.join(data, "tokenizer"), "--output-dir", os.path.join(data, "tokenized"), "--no-progress"])
    run([py, "tools/make_synthetic_checkpoint.py", "--preset", "tiny", "--dtype", "fp32",
         "--output", os.path.join(work, "student")])
    sft = train(work, "sft", "examples/configs/sft_tiny.yaml", sft_steps, "--model.path", os.path.join(work, "student"))
    start = sorted(os.listdir(os.path.join(work, "sft", "checkpoints")))[-1]
    redi = train(work, "redi", "examples/configs/redi_tiny.yaml", redi_steps,
                 "--model.path", os.path.join(work, "sft", "checkpoints", start))
    parity = run(["torchrun", "--nproc-per-node", "2", "examples/parity_demo.py"])
    diff = re.search(r"max \|logit - HF\| = ([0-9.e+-]+)", parity)
    return {"sft": {k: [m[k] for m in sft] for k in SERIES["sft"]},
            "redi": {k: [m[k] for m in redi] for k in SERIES["redi"]},
            "weights_sha256": {"sft": weights_digest(os.path.join(work, "sft")),
                               "redi": weights_digest(os.path.join(work, "redi"))},
            "parity_max_abs_diff": float(diff.group(1)) if diff else parity.strip()}


@command
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--output", required=True, help="JSON file for the values of this run")
    p.add_argument("--compare", help="a recorded JSON file to compare with")
    p.add_argument("--tolerance", type=float, default=0.0, help="largest difference accepted")
    p.add_argument("--sft-steps", type=positive_int, default=20)
    p.add_argument("--redi-steps", type=positive_int, default=10)
    args = p.parse_args(argv)
    check_output(args.output, overwrite=True, keep=(args.compare,) if args.compare else ())
    with tempfile.TemporaryDirectory(prefix="golden_") as work:
        values = record(work, args.sft_steps, args.redi_steps)
    with atomic_file(args.output) as f:
        json.dump(values, f, indent=1)
    print(f"wrote {args.output}")
    if args.compare:
        with open(args.compare) as f:
            want = json.load(f)
        return 0 if compare(values, want, args.tolerance) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
