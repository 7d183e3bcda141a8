"""tools/analyze.py's three analyses (the paper's Figures 8-10) on a short training run of the
demo's tiny model: outputs written, figures consistent with the inputs they were made from."""

import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(*args, check=True):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, check=check, cwd=ROOT)


@pytest.mark.slow
def test_the_three_analyses_on_a_run(tiny_run, tiny_run_inputs, tmp_path):
    data, _ = tiny_run_inputs
    tokenizer = os.path.join(data, "tokenizer")
    bench = tmp_path / "bench.jsonl"
    bench.write_text("".join(json.dumps({"problem": f"{i} + {i}", "answer": str(2 * i)}) + "\n" for i in range(3)))
    run("tools/evaluate.py", "--run", tiny_run, "--benchmark", bench, "--tokenizer", tokenizer,
        "--protocol", "intermediate_boxed", "--samples", "2",
        "--max-new-tokens", "6", "--output", tmp_path / "eval", "--no-progress")

    run("tools/analyze.py", "generations", tmp_path / "eval", "--words", "wait", "the", "--output", tmp_path / "fig8")
    fig8 = json.loads((tmp_path / "fig8.json").read_text())
    assert [r["step"] for r in fig8["checkpoints"]] == [1, 2, 3] and (tmp_path / "fig8.png").stat().st_size > 0
    results = [json.loads(line) for line in (tmp_path / "eval" / "step_00000002" / "bench.jsonl").read_text().splitlines()]
    lengths = [n for r in results for n in r["lengths"]]
    assert fig8["checkpoints"][1]["mean_tokens"] == sum(lengths) / 6 and 0 < max(lengths) <= 6
    assert {"mean_the", "the_per_1k_tokens"} <= fig8["checkpoints"][0].keys()

    out = run("tools/analyze.py", "entropy", "--run", tiny_run, "--data", data, "--benchmark", bench, "--tokenizer",
              tokenizer, "--pairs", "2", "--problems", "2", "--max-new-tokens", "6", "--output", tmp_path / "fig9").stdout
    fig9 = json.loads((tmp_path / "fig9.json").read_text())
    assert len(fig9["checkpoints"]) == 3 and "step_00000003: train_chosen" in out
    for row in fig9["checkpoints"]:
        for kind in ("train_chosen", "train_rejected", "test_generated"):
            assert 0 < row[kind] <= math.log(512) and row[f"{kind}_tokens"] > 0
    assert fig9["protocol"]["max_new_tokens"] == 6

    checkpoints = tiny_run / "checkpoints"
    run("tools/analyze.py", "logprob-shift", "--before", checkpoints / "step_00000001", "--after",
        checkpoints / "step_00000003", "--data", data, "--pairs", "6", "--output", tmp_path / "fig10")
    fig10 = json.loads((tmp_path / "fig10.json").read_text())
    one, ten = fig10["by_min_count"]["1"], fig10["by_min_count"]["10"]
    assert one["token_types"] == fig10["token_types"] <= fig10["tokens"] and 0 < ten["token_types"] <= one["token_types"]
    assert -1 <= one["pearson_r"] <= 1 and (tmp_path / "fig10.png").stat().st_size > 0
    same = run("tools/analyze.py", "logprob-shift", "--before", checkpoints / "step_00000003", "--after",
               checkpoints / "step_00000003", "--data", data, "--output", tmp_path / "none").stdout
    assert "Pearson r None" in same  # no change at all: the correlation is undefined, not invented


def test_analysis_errors_exit_2(tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    proc = run("tools/analyze.py", "generations", inputs, "--output", tmp_path / "x", check=False)
    assert proc.returncode == 2 and "not an output of tools/evaluate.py" in proc.stderr
    proc = run("tools/analyze.py", "logprob-shift", "--before", tmp_path / "a", "--after", tmp_path / "b", "--data",
               inputs, "--output", tmp_path / "x", check=False)
    assert proc.returncode == 2 and "not a tokenised dataset" in proc.stderr
    proc = run("tools/analyze.py", "generations", inputs, "--output", inputs / "x", check=False)
    assert proc.returncode == 2 and "refused, it would overwrite" in proc.stderr and not list(inputs.iterdir())
