"""The golden values of training: the first 20 SFT and 10 REDI steps of the demo (TP=2 + SP on 2
processes) against tests/golden/demo_first_steps.json. A change that alters training fails here;
one made on purpose records the file again:

    python tools/golden_steps.py --output tests/golden/demo_first_steps.json

The tolerance (1e-4, absolute, on losses, LogPS, gradient and update norms of order 0.01 to 10)
leaves room for another CPU's summation order; a change of the arithmetic itself moves these
series by far more within a few steps."""

import copy
import json
import os
import subprocess
import sys

import pytest

from megatron_redi.training.golden import compare

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GOLDEN = os.path.join(ROOT, "tests", "golden", "demo_first_steps.json")


@pytest.mark.slow
def test_the_demo_s_first_steps_are_the_recorded_ones(tmp_path):
    proc = subprocess.run([sys.executable, "tools/golden_steps.py", "--output", str(tmp_path / "now.json"),
                           "--compare", GOLDEN, "--tolerance", "1e-4"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    now = json.loads((tmp_path / "now.json").read_text())
    assert now["parity_max_abs_diff"] < 1e-4  # TP=2 + SP forward against transformers


def test_a_changed_step_is_reported():
    with open(GOLDEN) as f:
        golden = json.load(f)
    assert compare(golden, golden, 0.0)
    changed = copy.deepcopy(golden)
    changed["redi"]["logps/rejected_mean"][7] += 1e-3
    assert not compare(changed, golden, 1e-4)
    changed = copy.deepcopy(golden)
    changed["sft"]["loss"] = changed["sft"]["loss"][:-1]  # a step missing
    assert not compare(changed, golden, 1e-4)
