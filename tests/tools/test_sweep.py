"""tools/sweep.py: the paper's grids, any grid, a SLURM array script, and sequential runs."""

import json
import os
import subprocess
import sys

from megatron_redi.recipe.sweep import PRESETS, grid_runs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def sweep(*args, env=None):
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", "sweep.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, env=env)

CONFIG = os.path.join(ROOT, "examples", "configs", "paper", "qwen2.5-math-1.5b_redi.yaml")


def test_presets_are_appendix_c4():
    redi = {(r["loss.alpha"], r["optim.lr"]) for r in PRESETS["redi"]}
    assert redi == {(0.2, 1e-6), (0.5, 1e-6), (0.5, 2e-6), (0.8, 1e-6), (1.0, 1e-6), (1.0, 2e-7), (1.0, 1e-7)}
    assert len(PRESETS["dpo"]) == 11 and {r["loss.beta"] for r in PRESETS["dpo"]} == {0.1, 0.01, 0.001}
    assert [(r["loss.beta"], r["loss.gamma"], r["optim.lr"]) for r in PRESETS["simpo"]] == [(2.0, 1.0, 5e-7),
                                                                                                (10.0, 5.0, 3e-7)]


def test_a_grid_is_the_product_of_its_axes():
    runs = grid_runs(["optim.lr=1e-6,2e-6", "loss.alpha=0.5,0.8,1.0"])
    assert len(runs) == 6 and {"optim.lr": "2e-6", "loss.alpha": "0.8"} in runs


def test_slurm_array_script(tmp_path):
    script = tmp_path / "sweep.sbatch"
    done = sweep("--config", CONFIG, "--preset", "redi", "--model", "m", "--data", "d", "--out", tmp_path / "runs",
                 "--slurm", script)
    assert done.returncode == 0, done.stderr
    text = script.read_text()
    assert "#SBATCH --array=0-6" in text and text.count("bash examples/launch.sh") == 7
    assert "--loss.alpha 0.5 --optim.lr 2e-06" in text
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    plan = json.loads((tmp_path / "runs" / "sweep.json").read_text())
    assert [p["env"]["OUT"] for p in plan][0] == str(tmp_path / "runs" / "alpha0.2_lr1e-06")


def test_run_launches_each_in_turn(tmp_path):
    stub = tmp_path / "launch.sh"
    log = tmp_path / "calls.txt"
    stub.write_text(f'echo "$OUT $*" >> {log}\n')
    done = sweep("--config", CONFIG, "--grid", "optim.lr=1e-6,2e-6", "--model", "m", "--data", "d",
                 "--out", tmp_path / "runs", "--run", "--launcher", stub, "--", "--train.seed", "7")
    assert done.returncode == 0, done.stderr
    calls = log.read_text().splitlines()
    assert calls == [f"{tmp_path}/runs/lr1e-6 --optim.lr 1e-6 --train.seed 7",
                     f"{tmp_path}/runs/lr2e-6 --optim.lr 2e-6 --train.seed 7"]


def test_missing_inputs_are_named(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("MODEL", "DATA")}
    done = sweep("--config", CONFIG, "--preset", "dpo", "--out", tmp_path, env=env)
    assert done.returncode == 2 and "give --model and --data" in done.stderr
