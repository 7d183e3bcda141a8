"""Issue target: on CPU, hidden 256, vocab 151,936, 16,384 tokens, the reference path's peak RSS
stays under 2 GB. Minutes on 2 cores: run with ``pytest -m benchmark``."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.benchmark
def test_reference_path_peak_rss_under_2gb(tmp_path):
    out = tmp_path / "mem.json"
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "benchmark_logprob.py"), "--tokens", "16384",
                    "--hidden", "256", "--vocab", "151936", "--dtype", "fp32", "--paths", "single-pass/pytorch",
                    "--no-error", "--repeats", "1", "--json", str(out)], check=True)
    assert json.loads(out.read_text())["peak_rss_gib"] * 2**30 < 2e9
