"""tools/evaluate.py over a run's checkpoints: every kept checkpoint (weights-only ones included)
on two benchmarks, the curve and the best step, and a second call that keeps what is done."""

import json
import os
import subprocess
import sys

import pytest

from megatron_redi.eval.selection import best, score

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(*args, check=True):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, check=check, cwd=ROOT)


@pytest.mark.slow
def test_a_run_s_checkpoints_give_a_curve_and_the_best_step(tiny_run, tiny_run_inputs, tmp_path):
    data, _ = tiny_run_inputs
    for name in ("a", "b"):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps({"problem": f"{i} + {i}", "answer": str(2 * i)}) + "\n"
                                                        for i in range(3)))
    out = tmp_path / "eval"
    command = ["tools/evaluate.py", "--run", tiny_run, "--benchmark", f"a={tmp_path / 'a.jsonl'}", tmp_path / "b.jsonl",
               "--tokenizer", os.path.join(data, "tokenizer"), "--protocol", "intermediate_boxed", "--samples", "2",
               "--max-new-tokens", "4", "--output", out, "--no-progress"]
    first = run(*command)
    summary = json.loads((out / "summary.json").read_text())
    entries = summary["checkpoints"]
    assert [e["step"] for e in entries] == [1, 2, 3]
    assert not os.path.isdir(tiny_run / "checkpoints" / "step_00000001" / "training")  # weights only, evaluated too
    assert all(set(e["benchmarks"]) == {"a", "b"} for e in entries)
    assert summary["best"] == best(entries) and summary["best"]["score"] == max(score(e) for e in entries)
    assert summary["protocol"]["samples"] == 2 and summary["protocol"]["checker"] == "math-verify"
    assert (out / "curve.png").stat().st_size > 0 and "best: step_" in first.stdout
    lines = (out / "step_00000002" / "b.jsonl").read_text().splitlines()
    assert len(lines) == 3 and len(json.loads(lines[0])["correct"]) == 2

    text = run("tools/summary_table.py", f"toy run={out}", f"again={out}").stdout
    assert f"| toy run | {summary['best']['label']} (step {summary['best']['step']}) |" in text and "| Avg. |" in text
    assert f"{100 * summary['best']['score']:.1f} |" in text
    beside = run("tools/summary_table.py", f"toy run={out}", "--paper", "Qwen-REDI-1.5B").stdout.splitlines()
    assert beside[-1] == "| paper: Qwen-REDI-1.5B | best | - | - | - |"  # the paper has no benchmark a or b

    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.jsonl")}
    again = run(*command)  # as after an interruption: what is written is kept
    assert again.stdout.count("done before, kept") == 3
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.jsonl")} == stamps
    other = run(*command, "--samples", "3", check=False)  # the last --samples counts
    assert other.returncode == 2 and "another protocol" in other.stderr
    os.utime(tiny_run / "checkpoints" / "step_00000003" / "megatron_redi.json")  # as if retrained
    changed = run(*command, check=False)
    assert changed.returncode == 2 and "another checkpoint_files" in changed.stderr


def test_input_errors_exit_2_before_any_work(tiny_run, tmp_path):
    (tmp_path / "a.jsonl").write_text('{"problem": "x", "answer": "1"}\n')
    empty = tmp_path / "empty_run"
    empty.mkdir()
    for args, message in [
        (["--run", empty], "no checkpoints"),
        (["--run", tiny_run, "--select-by", "math500"], "not one of the benchmarks"),
        # a run's default, the intermediate protocol, compares with each problem's solution as LightEval did
        (["--run", tiny_run], "a.jsonl: problem 1 of the benchmark has no 'solution' to compare with"),
        (["--checkpoint", tiny_run / "checkpoints" / "step_00000001", tmp_path / "x" / "step_00000001"], "no such directory"),
    ]:
        proc = run("tools/evaluate.py", *args, "--benchmark", tmp_path / "a.jsonl", "--output", tmp_path / "o",
                   check=False)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert not (tmp_path / "o").exists()


def test_summary_table_errors_exit_2(tmp_path):
    (tmp_path / "summary.json").write_text('{"pass@1": 0.5}')
    for entry, message in [(f"x={tmp_path}", "not a summary written by tools/evaluate.py"), (str(tmp_path), "not LABEL=DIR"),
                           (f"x={tmp_path / 'none'}", "no such file")]:
        proc = run("tools/summary_table.py", entry, check=False)
        assert proc.returncode == 2 and message in proc.stderr
    proc = run("tools/summary_table.py", f"x={tmp_path}", "--paper", "Qwen-REDI-7B", check=False)
    assert proc.returncode == 2 and "'Qwen-REDI-7B': not a row of the paper's; its rows: 'Qwen2.5-Math-1.5B-Instruct'" in proc.stderr


def test_the_size_of_the_work_is_shown_first(tiny_run, tiny_run_inputs, tmp_path):
    data, _ = tiny_run_inputs
    (tmp_path / "b.jsonl").write_text("".join(json.dumps({"problem": f"{i} + {i}", "answer": str(2 * i)}) + "\n"
                                              for i in range(5)))
    command = ["tools/evaluate.py", "--run-dir", tiny_run, "--benchmark", tmp_path / "b.jsonl", "--tokenizer",
               os.path.join(data, "tokenizer"), "--protocol", "intermediate_boxed", "--max-new-tokens", "4",
               "--output", tmp_path / "eval", "--no-progress"]
    plan = run(*command, "--dry-run").stdout
    # the intermediate protocol for a run: 4 samples x 5 problems x 3 checkpoints
    assert "3 evaluations to run (3 checkpoints x 1 benchmarks, 0 done before), protocol custom: 60 generations of " \
           "up to 4 new tokens (240 tokens at most)" in plan
    assert not (tmp_path / "eval").exists()
    out = run(*command).stdout
    assert out.startswith("3 evaluations to run") and "40 generations left: about" in out


def test_a_model_that_never_thinks_is_warned_about_under_the_rllm_grader(tiny_run, tiny_run_inputs, tmp_path):
    data, _ = tiny_run_inputs
    (tmp_path / "b.jsonl").write_text(json.dumps({"problem": "1 + 1", "answer": "2"}) + "\n")
    out = run("tools/evaluate.py", "--checkpoint", tiny_run / "checkpoints" / "step_00000003", "--benchmark",
              tmp_path / "b.jsonl", "--tokenizer", os.path.join(data, "tokenizer"), "--samples", "2",
              "--max-new-tokens", "4", "--output", tmp_path / "eval", "--no-progress").stdout
    assert "protocol custom" in out and "rllm grader" in out and "--checker math-verify" in out

