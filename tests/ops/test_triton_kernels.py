"""Runs tests/ops/triton_kernel_checks.py (every Triton kernel against its PyTorch reference) in a
fresh pytest process: under Triton's CPU interpreter here, natively on a GPU. Why a fresh process:
that module's docstring. Its failures are shown as its own pytest run reports them."""

import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("triton", reason="Triton is not installed (CI installs it)")

CHECKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "triton_kernel_checks.py")


def run_checks(interpret: bool) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", CHECKS],
                          capture_output=True, text=True, env=env)
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert re.fullmatch(r"=* ?\d+ passed in [^ ]+ ?=*", summary), summary  # nothing skipped or deselected


def test_under_the_interpreter():
    run_checks(interpret=True)


@pytest.mark.cuda
def test_on_gpu():
    run_checks(interpret=False)
