"""The recipe's configs are its one source of truth: each loads, holds the paper's values, and the
launchers pass only what differs per machine, never a key a config sets."""

import glob
import os
import re
import subprocess

import pytest
import yaml

from megatron_redi.training import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PAPER = sorted(p for p in glob.glob(os.path.join(ROOT, "examples", "configs", "paper", "*.yaml"))
               if not p.endswith("evaluation.yaml"))  # the evaluation protocols, not a training run
MACHINE_KEYS = {"model.path", "data.path", "train.output_dir", "train.export_hf", "train.export_overwrite",
                "parallel.tensor_parallel"}


def _keys(config_file):
    with open(config_file) as f:
        raw = yaml.safe_load(f)
    return {f"{section}.{key}" for section, values in raw.items() for key in values}


def _launch(config_file, **env):
    done = subprocess.run(["bash", os.path.join(ROOT, "examples", "launch.sh")], capture_output=True, text=True,
                          env={**os.environ, "CONFIG": config_file, "MODEL": "m", "DATA": "d", "OUT": "o",
                               "DRY_RUN": "1", **env}, check=True)
    return re.findall(r"--([a-z_]+\.[a-z_]+)", done.stdout)


def test_every_run_the_paper_reports_has_a_config():
    names = {os.path.basename(p)[:-5] for p in PAPER}
    assert {"qwen2.5-math-1.5b_sft_5ep", "qwen2.5-math-1.5b_sft_3ep", "qwen2.5-math-1.5b_redi",
            "qwen2.5-math-1.5b_symmetric", "qwen2.5-math-1.5b_dpo", "qwen2.5-math-1.5b_simpo",
            "llama-3.2-3b_sft", "llama-3.2-3b_redi", "qwen2.5-math-7b_sft", "qwen2.5-math-7b_redi"} <= names


@pytest.mark.parametrize("config_file", PAPER, ids=os.path.basename)
def test_the_launcher_passes_no_key_the_config_sets(config_file):
    passed = set(_launch(config_file))
    assert passed <= MACHINE_KEYS
    assert not passed & _keys(config_file), passed & _keys(config_file)
    cfg = load_config(config_file, sum((["--" + k, "x"] for k in ("model.path", "data.path")), []))
    assert cfg.optim.betas == (0.9, 0.999) and cfg.optim.weight_decay == 1e-4 and cfg.optim.warmup_ratio == 0.1


def test_tp_passes_only_when_asked():
    assert "parallel.tensor_parallel" not in _launch(PAPER[0])
    assert "parallel.tensor_parallel" in _launch(PAPER[0], TP="2")


def test_the_slurm_script_passes_nothing_of_its_own():
    with open(os.path.join(ROOT, "examples", "slurm_redi.sbatch")) as f:
        code = "".join(line for line in f if not line.lstrip().startswith("#"))
    assert "examples/launch.sh" in code and not re.findall(r"--[a-z_]+\.[a-z_]+", code)


def _load(name):
    return load_config(os.path.join(ROOT, "examples", "configs", "paper", name + ".yaml"),
                       ["--model.path", "m", "--data.path", "d"])


def test_the_configs_hold_appendix_c():
    sft5, sft3 = _load("qwen2.5-math-1.5b_sft_5ep"), _load("qwen2.5-math-1.5b_sft_3ep")
    assert (sft5.train.epochs, sft3.train.epochs, sft5.optim.lr, sft5.data.global_batch) == (5, 3, 5e-5, 128)
    assert (sft5.model.rope_theta, sft5.model.max_position_embeddings) == (300000.0, 32768)
    redi, sym = _load("qwen2.5-math-1.5b_redi"), _load("qwen2.5-math-1.5b_symmetric")
    assert (redi.loss.type, redi.loss.alpha, redi.optim.lr, redi.data.global_batch, redi.train.epochs) == \
        ("redi", 0.8, 1e-6, 32, 1)
    assert (sym.loss.type, sym.optim.lr) == ("symmetric", 2e-7)
    dpo, simpo = _load("qwen2.5-math-1.5b_dpo"), _load("qwen2.5-math-1.5b_simpo")
    assert (dpo.loss.beta, dpo.optim.lr) == (0.001, 2e-7)
    assert (simpo.loss.beta, simpo.loss.gamma, simpo.optim.lr) == (2.0, 1.0, 5e-7)
    for name in ("qwen2.5-math-1.5b_redi", "llama-3.2-3b_redi", "qwen2.5-math-7b_redi"):
        assert _load(name).checkpoint.every == 200


def test_llama_keeps_its_own_rope(tiny_checkpoint):
    from megatron_redi.model import from_pretrained

    for name in ("llama-3.2-3b_sft", "llama-3.2-3b_redi"):
        cfg = _load(name)
        assert cfg.model.rope_theta is None and cfg.model.max_position_embeddings is None
        model = from_pretrained(tiny_checkpoint(arch="llama3"), rope_theta=cfg.model.rope_theta,
                                max_position_embeddings=cfg.model.max_position_embeddings)
        assert model.cfg.rope_theta == 500000.0 and model.cfg.rope_scaling.factor == 8.0
    assert _load("qwen2.5-math-7b_sft").model.rope_theta == 300000.0  # the Qwen students' edit


def test_missing_environment_is_named_all_at_once():
    env = {k: v for k, v in os.environ.items() if k not in ("CONFIG", "MODEL", "DATA", "OUT")}
    done = subprocess.run(["bash", os.path.join(ROOT, "examples", "launch.sh")], capture_output=True, text=True,
                          env={**env, "MODEL": "m"})
    assert done.returncode == 2 and "set CONFIG DATA OUT" in done.stderr
