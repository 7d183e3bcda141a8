"""Several nodes without SLURM: two torchrun launchers on this machine, joined by a c10d rendezvous
(`torchrun --nnodes 2 --rdzv-backend c10d`, as on two hosts or under Kubernetes), run a training
stage and an evaluation; each equals the same work by one launcher of the same world size."""

import json
import os
import socket
import subprocess
import sys

import pytest

from megatron_redi.data import synthetic
from local_cluster import ROOT

pytestmark = pytest.mark.slow  # end to end, minutes: the whole suite runs it, -m "not slow" leaves it out

TRAIN = ["-m", "megatron_redi.train", "--model.dtype", "fp32", "--data.global_batch", "8", "--train.max_steps", "6",
         "--train.progress", "false", "--train.tensorboard", "false", "--parallel.tensor_parallel", "2"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}


def _on_two_launchers(*command, name: str):
    """``torchrun --nnodes 2`` twice, one process each, as on two nodes."""
    rendezvous = ["--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
                  "--rdzv-endpoint", f"127.0.0.1:{_free_port()}", "--rdzv-id", name]
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *rendezvous, *map(str, command)],
                              env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
             for _ in range(2)]
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(o[-3000:] for o in outputs)


def _on_one_launcher(*command):
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           *map(str, command)], env=_env(), capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _losses(run):
    with open(run / "metrics.jsonl") as f:
        return [(r["step"], r["loss"], r["grad_norm"]) for r in map(json.loads, f) if "loss" in r]


def test_a_training_stage_and_an_evaluation_over_two_launchers(tiny_run_inputs, tmp_path):
    data, model = tiny_run_inputs
    inputs = ["--model.path", model, "--data.path", data]
    _on_two_launchers(*TRAIN, *inputs, "--train.output_dir", tmp_path / "two", name="train")
    _on_one_launcher(*TRAIN, *inputs, "--train.output_dir", tmp_path / "one")
    assert len(_losses(tmp_path / "two")) == 6 and _losses(tmp_path / "two") == _losses(tmp_path / "one")

    synthetic.write_benchmark(str(tmp_path / "bench.jsonl"), 6, digits=3)
    checkpoint = tmp_path / "two" / "checkpoints" / "step_00000006"
    evaluate = ["tools/evaluate.py", "--checkpoint", checkpoint, "--benchmark", f"toy={tmp_path / 'bench.jsonl'}",
                "--tokenizer", os.path.join(data, "tokenizer"), "--samples", "2", "--max-new-tokens", "8",
                "--checker", "math-verify", "--no-progress"]
    _on_two_launchers(*evaluate, "--output", tmp_path / "eval_two", name="evaluate")
    _on_one_launcher(*evaluate, "--output", tmp_path / "eval_one")
    generations = [(tmp_path / d / "step_00000006" / "toy.jsonl").read_text() for d in ("eval_two", "eval_one")]
    rows = [json.loads(line) for line in generations[0].splitlines()]
    assert [len(r["generations"]) for r in rows] == [2] * 6 and generations[0] == generations[1]  # every sample
    results = [json.loads((tmp_path / d / "summary.json").read_text())["checkpoints"][0]["benchmarks"]
               for d in ("eval_two", "eval_one")]
    assert results[0] == results[1]
