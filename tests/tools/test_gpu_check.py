"""tools/gpu_check.sh --dry-run: every step of the GPU check, with the same tools and flags at toy
sizes on CPU, succeeds; so the script cannot drift from the tools it calls."""

import json
import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = ["cuda_tests_triton", "cuda_tests_extension", "throughput_8192", "throughput_4096", "throughput_16384",
         "throughput_19000", "attention_pair", "attention_uneven", "logprob_16k", "toy_data", "toy_redi",
         "toy_symmetric", "toy_dpo", "toy_simpo", "toy_sft", "toy_eval", "multirank_shared_gpu",
         "context_parallel", "generation_1.5b", "generation_batching", "checkpoint_stall", "logprob_65k"]


@pytest.mark.slow
def test_every_step_runs_at_toy_sizes(tmp_path):
    done = subprocess.run(["bash", os.path.join(ROOT, "tools", "gpu_check.sh"), "--dry-run"], capture_output=True,
                          text=True, env={**os.environ, "OUT": str(tmp_path)}, timeout=600)
    assert done.returncode == 0, done.stderr
    summary = (tmp_path / "summary.txt").read_text()
    outcomes = re.findall(r"^== (\S+): rc=(\d+)", summary, flags=re.M)
    assert [name for name, _ in outcomes] == STEPS
    failed = [name for name, rc in outcomes if rc != "0"]
    assert not failed, (tmp_path / "logs.txt").read_text()[-5000:]
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 12  # one per benchmark step
    timed = [json.loads(line) for line in (tmp_path / "steps.jsonl").read_text().splitlines()]
    assert [t["step"] for t in timed] == STEPS and all(t["rc"] == 0 and t["seconds"] >= 0 for t in timed)


def test_past_the_deadline_every_step_is_skipped_and_said(tmp_path):
    done = subprocess.run(["bash", os.path.join(ROOT, "tools", "gpu_check.sh"), "--quick", "--dry-run"],
                          capture_output=True, text=True, env={**os.environ, "OUT": str(tmp_path), "DEADLINE": "5"},
                          timeout=120)
    assert done.returncode == 0, done.stderr
    skipped = [json.loads(line) for line in (tmp_path / "steps.jsonl").read_text().splitlines()]
    assert skipped and all(s["skipped"] == "deadline" for s in skipped)
    assert "cuda_tests_triton: skipped, " in (tmp_path / "summary.txt").read_text()


def test_the_cuda_test_step_names_every_file_with_cuda_tests():
    """Named files: an optional package another test file imports cannot stop the CUDA tests."""
    script = open(os.path.join(ROOT, "tools", "gpu_check.sh")).read()
    named = set(re.search(r'CUDA_TESTS="([^"]*)"', script).group(1).split()) | {"tests/ops/test_logprob_cuda.py"}
    marked = {os.path.relpath(os.path.join(d, f), ROOT) for d, _, files in os.walk(os.path.join(ROOT, "tests"))
              for f in files if f.startswith("test_") and f.endswith(".py")
              and re.search(r"mark\.cuda\b", open(os.path.join(d, f)).read())}
    assert named == marked


def test_an_unknown_option_is_refused(tmp_path):
    done = subprocess.run(["bash", os.path.join(ROOT, "tools", "gpu_check.sh"), "--fast"], capture_output=True,
                          text=True, env={**os.environ, "OUT": str(tmp_path)})
    assert done.returncode == 2 and "usage: bash tools/gpu_check.sh [--quick] [--dry-run]" in done.stderr
