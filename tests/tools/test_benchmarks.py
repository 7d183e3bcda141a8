"""The benchmark tools run end to end on CPU with toy sizes (their GPU figures come from
tools/gpu_check.sh)."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(tool, *args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", tool), *map(str, args)],
                          capture_output=True, text=True, check=True).stdout


def test_throughput_benchmark_tiny_preset_with_hf_comparison(tmp_path):
    out = tmp_path / "t.json"
    text = _run("benchmark_throughput.py", "--preset", "tiny", "--seq-len", "128", "--prompt-len", "16",
                "--steps", "2", "--warmup", "1", "--compare", "hf", "--profile", "5", "--json", out)
    result = json.loads(out.read_text())
    assert result["tokens_per_s"] > 0 and result["hf_tokens_per_s"] > 0
    assert result["recompute"] == "auto" and result["full_recompute_layers"] == 0  # CPU: selective
    assert "Self CPU time total" in text  # the profile's table
    assert abs(result["speedup_vs_hf"] - result["tokens_per_s"] / result["hf_tokens_per_s"]) < 1e-6
    assert set(result["phases_ms"]) == {"forward", "head", "backward", "optimizer"}
    assert result["ceiling_tokens_per_s"] > 0 and "megatron_redi" in text


def test_logprob_benchmark_runs_every_path(tmp_path):
    out = tmp_path / "l.json"
    _run("benchmark_logprob.py", "--tokens", "256", "--hidden", "32", "--vocab", "1024", "--repeats", "1",
         "--chunk-tokens", "64,0", "--json", out)
    results = json.loads(out.read_text())["results"]
    assert {"naive", "two-pass/pytorch", "single-pass/pytorch", "single-pass/pytorch@64"} <= set(results)
    for name, r in results.items():
        if name != "naive":  # the fused paths accumulate dW in fp32
            assert r["grad_rel_err_dw"] < 1e-3, name
