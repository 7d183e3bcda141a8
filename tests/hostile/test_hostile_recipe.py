"""Hostile invocations of the one-command recipe (examples/run_redi_1.5b.sh): each is refused with
exit 2 and its error (missing inputs: one line each) before any work, and no stage is started."""

import os
import subprocess

import pytest
from nothing_lost import ROOT

RECIPE_VARIABLES = ("MODEL", "RAW", "BENCH", "OUT", "NGPU", "SFT", "STAGES", "STUDENT", "TOKENIZER", "DRY_RUN",
                    "TOY", "WORKERS")


def _recipe(tmp_path, **values):
    env = {k: v for k, v in os.environ.items() if k not in RECIPE_VARIABLES}
    env.update({"OUT": str(tmp_path / "out"), **{k: str(v) for k, v in values.items()}})
    return subprocess.run(["bash", os.path.join(ROOT, "examples", "run_redi_1.5b.sh")], env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("values, message", [
    ({"STAGES": ","}, "STAGES=,: names no stage (its stages: data,sft,redi,redi_select,redi_final,table)"),
    ({"STAGES": " , "}, "names no stage"),
    ({"NGPU": "²"}, "NGPU=²: not a positive integer"),
    ({"WORKERS": "١٢"}, "WORKERS=١٢: not a positive integer"),
    ({"TOY": "1", "SFT": "no_such_sft_model"}, "SFT=no_such_sft_model: no such directory"),
    ({"TOY": "1", "STAGES": "data,redi"}, "stage redi needs stage sft complete first (add it to STAGES)"),
])
def test_refused_before_any_work(tmp_path, values, message):
    done = _recipe(tmp_path, **values)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert message in done.stderr and done.stderr.startswith("error:"), done.stderr  # missing inputs: one per line
    assert not (tmp_path / "out" / "data").exists()  # no stage started (the toy's inputs are not stages)
