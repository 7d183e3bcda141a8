#!/usr/bin/env python
"""A multi-rank run end to end at toy size, before the first real one: training at TP=2 with
sequence parallelism and DP=2 with ZeRO-1 (4 ranks), DPO (its reference pre-pass), a checkpoint,
SIGTERM to one rank mid-run (every rank stops after the same step, with a checkpoint), the resume
to the end with an evaluation during training, then tools/evaluate.py at TP=2 x DP=2 on the
saved checkpoints. Every collective checks that its tensors are on the process group's device.

    python tools/multirank_check.py --model M --data D --benchmark B.jsonl --output DIR
        on a machine with 4 GPUs or more: the NCCL run, as an 8-GPU job would start
    python tools/multirank_check.py --shared-gpu ...
        the 4 ranks on one GPU over gloo (MEGATRON_REDI_SHARED_GPU=1): the CUDA code of a
        multi-rank run on a one-GPU machine (tools/gpu_check.sh runs this). What it cannot show is
        NCCL's own behaviour: its kernels, its timeouts, its teardown.
    without a GPU, the same run on CPU over gloo

M: a small student (tools/make_synthetic_checkpoint.py --preset tiny), D: tools/preprocess_data.py's
directory, B: a benchmark (tools/make_synthetic_traces.py writes both). Prints one line per stage;
exit 0 only when every stage did what it should.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time

from megatron_redi.atomic import check_output
from megatron_redi.cli import HelpFormatter, command
from megatron_redi.data import TokenizedData
from megatron_redi.eval import load_benchmark
from megatron_redi.settings import local_directory, tokenizer_directory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RANKS, TP, STEPS, SIGNAL_AFTER = 4, 2, 8, 2


class CheckFailed(Exception):
    pass


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(RANKS), *args]


def training(args) -> list[str]:
    return torchrun("-m", "megatron_redi.train", "--model.path", args.model, "--data.path", args.data,
                    "--train.stage", "pairwise", "--loss.type", "dpo", "--parallel.tensor_parallel", str(TP),
                    "--parallel.sequence_parallel", "true", "--parallel.zero1", "true",
                    "--data.global_batch", "8", "--data.micro_batch_tokens", "512", "--optim.lr", "1e-3",
                    "--train.max_steps", str(STEPS), "--checkpoint.every", "1", "--checkpoint.keep", "2",
                    "--eval.every", str(STEPS), "--eval.benchmark", args.benchmark, "--eval.max_problems", "8",
                    "--eval.max_new_tokens", "24", "--train.progress", "false",
                    "--train.output_dir", os.path.join(args.output, "run"))


def evaluation(args) -> list[str]:
    # the boxed reading: a synthetic benchmark carries answers, not the solutions LightEval's reading needs
    return torchrun(os.path.join(ROOT, "tools", "evaluate.py"), "--run-dir", os.path.join(args.output, "run"),
                    "--protocol", "intermediate_boxed", "--tp", str(TP), "--tokenizer", args.tokenizer or os.path.join(args.data, "tokenizer"),
                    "--benchmark", args.benchmark, "--samples", "2", "--max-problems", "8", "--max-new-tokens", "24",
                    "--no-progress", "--output", os.path.join(args.output, "eval"))


def steps_logged(run: str) -> list[dict]:
    """The training steps metrics.jsonl holds so far (evaluations aside; a line being written is
    left for the next look)."""
    path = os.path.join(run, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        records = [json.loads(line) for line in f if line.endswith("\n")]
    return [r for r in records if "loss" in r]


def interrupted(cmd: list[str], env: dict, run: str, log: str) -> str:
    """The training, with SIGTERM to its last rank once SIGNAL_AFTER steps are logged."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.time() + 600
        while len(steps_logged(run)) < SIGNAL_AFTER and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        if proc.poll() is not None:  # it ended by itself: its own error is the cause
            raise CheckFailed(f"the training exited {proc.returncode} before the signal; see {log}: "
                              f"{open(log).read()[-2000:]}")
        if workers:
            os.kill(int(workers[-1]), signal.SIGTERM)  # one rank only: the ranks must agree to stop together
        proc.wait(timeout=600)
    text = open(log).read()
    if "after step" not in text or "run the same command again to resume" not in text:
        raise CheckFailed(f"the run did not stop on SIGTERM with a checkpoint (exit {proc.returncode}); see {log}")
    stopped = steps_logged(run)[-1]["step"]
    if not os.path.isdir(os.path.join(run, "checkpoints", f"step_{stopped:08d}")):
        raise CheckFailed(f"stopped after step {stopped} without its checkpoint; see {log}")
    return f"stopped after step {stopped} of {STEPS} on SIGTERM to one rank, checkpoint written"


def completed(cmd: list[str], env: dict, log: str) -> str:
    with open(log, "w") as out:
        code = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    if code:
        raise CheckFailed(f"exit {code}; see {log}: {open(log).read()[-2000:]}")
    return open(log).read()


def resumed(cmd: list[str], env: dict, run: str, log: str) -> str:
    text = completed(cmd, env, log)
    if "resumed from" not in text:
        raise CheckFailed(f"the second run did not resume; see {log}")
    steps = steps_logged(run)
    losses = [s["loss"] for s in steps]
    if steps[-1]["step"] != STEPS or not all(math.isfinite(x) for x in losses):
        raise CheckFailed(f"the resumed run ended at step {steps[-1]['step']} with losses {losses}")
    evaluated = [s for s in steps if s["step"] == STEPS and "eval/pass@1" in s]
    if not evaluated:
        raise CheckFailed(f"no evaluation during training; see {log}")
    return (f"resumed, ran to step {STEPS}: losses {', '.join(f'{x:.4f}' for x in losses)}; "
            f"in-training eval pass@1 {evaluated[-1]['eval/pass@1']:.3f}")


def evaluated(cmd: list[str], env: dict, output: str, log: str) -> str:
    completed(cmd, env, log)
    with open(os.path.join(output, "summary.json")) as f:
        summary = json.load(f)
    return f"tools/evaluate.py at TP={TP} x DP={RANKS // TP}: {len(summary['checkpoints'])} checkpoints evaluated"


@command
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--model", required=True, help="an HF student directory (tiny)")
    p.add_argument("--data", required=True, help="a tools/preprocess_data.py directory of pairs")
    p.add_argument("--benchmark", required=True, help="JSON lines of {problem, answer}")
    p.add_argument("--tokenizer", help="default: DATA/tokenizer")
    p.add_argument("--output", required=True, help="a new directory for the runs and their logs")
    p.add_argument("--shared-gpu", action="store_true", help="all ranks on one GPU over gloo")
    args = p.parse_args(argv)
    local_directory(args.model, "--model")  # each input named now, not as a run that failed to start
    TokenizedData(local_directory(args.data, "--data"))
    tokenizer_directory(args.tokenizer or os.path.join(args.data, "tokenizer"))
    load_benchmark(args.benchmark)
    check_output(args.output, overwrite=False, keep=(args.model, args.data, args.benchmark, args.tokenizer or ""))
    os.makedirs(args.output, exist_ok=True)
    env = dict(os.environ, MEGATRON_REDI_CHECK_COLLECTIVES="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    if args.shared_gpu:
        env["MEGATRON_REDI_SHARED_GPU"] = "1"
    run, log = os.path.join(args.output, "run"), os.path.join(args.output, "{}.log").format
    stages = [("train, SIGTERM", lambda: interrupted(training(args), env, run, log("train"))),
              ("resume", lambda: resumed(training(args), env, run, log("resume"))),
              ("evaluate", lambda: evaluated(evaluation(args), env, os.path.join(args.output, "eval"), log("eval")))]
    for name, stage in stages:
        t0 = time.time()
        try:
            outcome = stage()
        except (CheckFailed, OSError, subprocess.TimeoutExpired) as e:
            print(f"{name}: FAILED after {time.time() - t0:.0f} s: {e}", flush=True)
            return 1
        print(f"{name}: ok, {time.time() - t0:.0f} s: {outcome}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
