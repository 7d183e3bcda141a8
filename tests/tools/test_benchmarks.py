"""The benchmark tools run end to end on CPU with toy sizes (their GPU figures come from
tools/gpu_check.sh)."""

import json
import os
import subprocess
import sys

from megatron_redi.training.profiling import device_idle, idle_report, summarize_clocks

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
    assert set(result["ceiling_parts_ms"]) == {"gemms", "attention", "head"}
    assert abs(sum(result["ceiling_parts_ms"].values()) - result["ceiling_ms"]) < 1e-6


def test_throughput_baseline_starts_after_our_model_is_gone(monkeypatch):
    """Our model and optimizer state (~28 GB at 1.5B) must not sit beside the HF baseline's."""
    import importlib.util
    import weakref

    spec = importlib.util.spec_from_file_location("benchmark_throughput", os.path.join(ROOT, "tools",
                                                                                     "benchmark_throughput.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    models, alive_at_baseline = weakref.WeakSet(), []

    class Tracked(tool.Decoder):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            models.add(self)

    def baseline(*args, **kwargs):
        alive_at_baseline.append(len(models))
        return 1.0

    monkeypatch.setattr(tool, "Decoder", Tracked)
    monkeypatch.setattr(tool, "hf_step", baseline)
    tool.main(["--preset", "tiny", "--seq-len", "32", "--prompt-len", "8", "--steps", "1", "--warmup", "1",
               "--compare", "hf", "--no-ceiling"])
    assert alive_at_baseline == [0]


def test_logprob_benchmark_runs_every_path(tmp_path):
    out = tmp_path / "l.json"
    _run("benchmark_logprob.py", "--tokens", "256", "--hidden", "32", "--vocab", "1024", "--repeats", "1",
         "--chunk-tokens", "64,0", "--json", out)
    results = json.loads(out.read_text())["results"]
    assert {"naive", "two-pass/pytorch", "single-pass/pytorch", "single-pass/pytorch@64"} <= set(results)
    for name, r in results.items():
        if name != "naive":  # the fused paths accumulate dW in fp32
            assert r["grad_rel_err_dw"] < 1e-3, name


def test_device_idle_finds_the_gaps_and_the_late_launches():
    kernel = lambda name, ts, dur, c: {"ph": "X", "cat": "kernel", "name": name, "ts": ts, "dur": dur,
                                        "args": {"correlation": c}}
    launch = lambda ts, c: {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": ts, "dur": 5,
                            "tid": 1, "args": {"correlation": c}}
    op = lambda name, ts, dur: {"ph": "X", "cat": "cpu_op", "name": name, "ts": ts, "dur": dur, "tid": 1}
    events = [kernel("a", 0, 100, 1), kernel("b", 50, 100, 2),   # overlapping: busy 0..150
              kernel("c", 160, 40, 3),                             # a 10 us gap: below the threshold
              kernel("d", 300, 100, 4),                            # a 100 us gap, launched late
              kernel("e", 450, 50, 5),                             # a 50 us gap, launched in time
              launch(-10, 1), launch(-5, 2), launch(0, 3), launch(290, 4), launch(100, 5),
              op("outer", 280, 20), op("aten::mm", 285, 10), op("other", 90, 20)]
    busy, span, gaps = device_idle(events)
    assert (busy, span) == (150 + 40 + 100 + 50, 500)
    assert [(g["us"], g["late"], g["before"]) for g in gaps] == [(100, True, "d"), (50, False, "e")]
    assert gaps[0]["host"] == ["outer", "aten::mm"] and gaps[0]["after"] == "c"
    report = idle_report(events)
    assert "busy 0.3 of 0.5 ms" in report and "0.10  outer > aten::mm" in report


def test_clock_summary_keeps_the_busy_samples():
    line = summarize_clocks(["1980, 120.5", "1755, 690.1", "1740, 699.9", "1800, 650", "[N/A], 1", "17"])
    assert line.startswith("clocks while busy (3 of 4 samples): SM 1740 / 1755 / 1800 MHz")
    assert "power median 690 W, max 700 W" in line
    assert summarize_clocks([]) == "clocks: no samples"


def test_attention_benchmark_times_every_variant_on_the_same_inputs(tmp_path):
    out = tmp_path / "a.json"
    _run("benchmark_attention.py", "--seq-lens", "48,48", "--heads", "4", "--kv-heads", "2", "--head-dim", "16",
         "--repeats", "1", "--json", out)
    results = json.loads(out.read_text())["results"]
    assert set(results) == {"model", "contiguous", "batched"}  # CPU: no backends to pin, no varlen
    for name, r in results.items():
        assert r["max_abs_diff"] < 1e-5 and 0 < r["forward_ms"] and 0 < r["forward_backward_ms"], name


def test_hf_liger_without_liger_is_a_clear_error_and_hf_warns_nothing():
    import importlib.util

    import pytest

    if importlib.util.find_spec("liger_kernel") is not None:
        pytest.skip("liger-kernel is installed here: the error path cannot be reached")
    args = [sys.executable, "-W", "error::FutureWarning", os.path.join(ROOT, "tools", "benchmark_throughput.py"),
            "--preset", "tiny", "--seq-len", "32", "--prompt-len", "8", "--no-ceiling"]
    out = subprocess.run(args + ["--compare", "hf-liger"], capture_output=True, text=True)
    assert out.returncode == 2 and "--compare hf-liger needs liger-kernel" in out.stderr and "Traceback" not in out.stderr
    out = subprocess.run(args + ["--compare", "hf", "--steps", "1", "--warmup", "0"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]  # no FutureWarning raised as an error
    assert "dominated by warm-up" in out.stdout


def test_checkpoint_benchmark_times_both_modes_and_both_writers(tmp_path):
    _run("benchmark_checkpoint.py", tmp_path, "--preset", "tiny", "--steps", "5", "--every", "2", "--saves", "2",
         "--repeats", "1", "--dtype", "fp32")
    report = json.loads((tmp_path / "checkpoint_benchmark.json").read_text())
    training = report["training"]
    assert [len(r["stall_s"]) for mode in ("sync", "async") for r in training["runs"][mode]] == [2, 2]
    assert [len(r["write_s"]) for r in training["runs"]["async"]] == [2]  # every background write completed
    assert training["medians"]["async"]["step_s_save_in_flight"] > 0
    assert len(training["medians"]["stall_ratio_pair_by_pair"]) == 1
    mechanisms = report["mechanisms"]["medians"]
    assert set(mechanisms) == {"own_async", "dcp_async", "own_sync", "dcp_sync"}
    assert all(0 < m["stall_s"] <= m["complete_s"] for m in mechanisms.values())
    assert report["dcp_metadata_executes_code_on_load"] is True  # torch reads DCP's metadata with pickle
    assert not os.path.exists(tmp_path / "runs" / "sync_0" / "checkpoints")  # gigabytes at real sizes
