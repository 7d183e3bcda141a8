"""The command-line entry points end to end on toy inputs: outputs written, errors exit 2."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(*args, check=True):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, check=check, cwd=ROOT)


def test_synthetic_traces_then_evaluate(tiny_checkpoint, tmp_path):
    run("tools/make_synthetic_traces.py", "--output-dir", tmp_path / "syn", "--rows", "20",
        "--benchmark-problems", "6", "--digits", "3")
    for name in ("traces.jsonl", "benchmark.jsonl", "tokenizer/tokenizer.json"):
        assert (tmp_path / "syn" / name).exists()
    row = json.loads((tmp_path / "syn" / "traces.jsonl").read_text().splitlines()[0])
    assert {"problem", "generations", "correctness", "problem_is_valid", "source"} <= row.keys()

    # any checkpoint works for the plumbing; its answers are of course wrong
    checkpoint = tiny_checkpoint()
    out = run("tools/evaluate.py", "--checkpoint", checkpoint, "--tokenizer", tmp_path / "syn" / "tokenizer",
              "--benchmark", tmp_path / "syn" / "benchmark.jsonl", "--samples", "2", "--max-new-tokens", "8",
              "--output", tmp_path / "eval", "--dtype", "fp32")
    written = tmp_path / "eval" / os.path.basename(checkpoint)
    summary = json.loads((written / "benchmark.json").read_text())
    assert {"pass@1", "sem", "pass@2", "protocol"} <= summary.keys() and summary["problems"] == 6
    assert json.loads((tmp_path / "eval" / "summary.json").read_text())["best"]["checkpoint"] == checkpoint
    results = [json.loads(line) for line in (written / "benchmark.jsonl").read_text().splitlines()]
    assert len(results) == 6 and all(len(r["correct"]) == 2 for r in results)
    assert "pass@1" in out.stdout


def test_train_command_line_errors_exit_2(tmp_path):
    proc = run("-m", "megatron_redi.train", "--optim.lr", "1e-5", check=False)
    assert proc.returncode == 2 and "model.path is required" in proc.stderr
    proc = run("-m", "megatron_redi.train", "--model.path", tmp_path, "--data.path", tmp_path, check=False)
    assert proc.returncode == 2 and "not a tokenised dataset" in proc.stderr


def test_train_command_line_runs_and_exports(tiny_run_inputs, tmp_path):
    data, model = tiny_run_inputs
    proc = run("-m", "megatron_redi.train", "--model.path", model, "--data.path", data, "--model.dtype", "fp32",
               "--data.global_batch", "8", "--train.max_steps", "2", "--train.output_dir", tmp_path / "run",
               "--train.progress", "false", "--export-hf", tmp_path / "hf")
    assert "done:" in proc.stdout
    assert (tmp_path / "hf" / "model.safetensors").exists() and (tmp_path / "hf" / "tokenizer.json").exists()
