"""Hostile input to the other commands (the converter, sweep, plot_metrics, golden_steps, the
recipe), and the rules under all of them: one entry wrapper (bad input exits 2 with one line, a
bug keeps its traceback), one output guard, atomic replacement of a directory."""

import json
import os
import shutil

import pytest
from nothing_lost import ROOT, refused, script, snapshot

from megatron_redi import atomic
from megatron_redi.checkpoint import CheckpointError
from megatron_redi.checkpoint.convert import main as convert
from megatron_redi.model import from_pretrained
from megatron_redi.cli import UserError, command
from megatron_redi.commands import plot_metrics
from megatron_redi.settings import ConfigError

CONFIG = os.path.join(ROOT, "examples", "configs", "paper", "qwen2.5-math-1.5b_redi.yaml")


def test_the_entry_wrapper(capsys):
    @command
    def bad_input(argv=None):
        raise ConfigError("x.json: field 'y' is wrong")

    @command
    def unwritable(argv=None):
        raise PermissionError(13, "Permission denied", "/out/dir")

    @command
    def bug(argv=None):
        raise ValueError("a bug, not bad input")

    assert bad_input() == 2 and capsys.readouterr().err == "error: x.json: field 'y' is wrong\n"
    assert unwritable() == 2 and capsys.readouterr().err == "error: /out/dir: Permission denied\n"
    with pytest.raises(ValueError, match="a bug"):  # its traceback is kept
        bug()
    assert issubclass(ConfigError, UserError)


@pytest.fixture
def hf_copy(tiny_checkpoint, tmp_path):
    copy = tmp_path / "hf"
    shutil.copytree(tiny_checkpoint(), copy)
    return copy


@pytest.mark.parametrize("edit, message", [
    (lambda c: {**c, "hidden_size": "64"}, "field 'hidden_size' is '64'; expected int"),
    (lambda c: {**c, "architectures": "Qwen2ForCausalLM"}, "field 'architectures' is 'Qwen2ForCausalLM'; expected list"),
    (lambda c: {**c, "tie_word_embeddings": 1}, "field 'tie_word_embeddings' is 1; expected bool"),
    (lambda c: {**c, "rope_scaling": [1, 2]}, "field 'rope_scaling' is [1, 2]; expected dict"),
    (lambda c: [c], "config.json: a JSON list, not an object of fields"),
    (lambda c: {**c, "vocab_size": None}, "config.json: required field 'vocab_size' is missing (null)"),
    (lambda c: {k: v for k, v in c.items() if k != "num_hidden_layers"}, "required field 'num_hidden_layers' is missing"),
])
def test_a_config_json_with_the_wrong_types(hf_copy, tmp_path, capsys, edit, message):
    config = json.loads((hf_copy / "config.json").read_text())
    (hf_copy / "config.json").write_text(json.dumps(edit(config)))
    err = refused(convert, "hf-to-native", "--input", hf_copy, "--output", tmp_path / "out", "--tp", "1", capsys=capsys)
    assert message in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("sizes, message", [
    ({"num_hidden_layers": 10**9}, "the config says 1000000000 layers (num_hidden_layers), the files hold layers 0 to 1"),
    ({"vocab_size": 10**10}, "the config says vocab_size 10000000000 and hidden_size 64; the embedding in the files is "
                             "[384, 64]"),
    ({"hidden_size": 2**31, "num_attention_heads": 2**10}, "hidden_size 2147483648; the embedding in the files is"),
])
def test_a_config_json_of_absurd_sizes_is_refused_before_anything_is_built(hf_copy, tmp_path, capsys, sizes, message):
    """Sizes checked against the files' headers first: no name table of a billion layers, no model of
    ten billion rows (each refusal in well under a second)."""
    import time

    (hf_copy / "config.json").write_text(json.dumps({**json.loads((hf_copy / "config.json").read_text()), **sizes}))
    for argv in (["hf-to-native", "--input", hf_copy, "--output", tmp_path / "out", "--tp", "1"],
                 ["hf-to-native", "--input", hf_copy, "--output", tmp_path / "out", "--tp", "1", "--dry-run"]):
        start = time.monotonic()
        err = refused(convert, *argv, capsys=capsys)
        assert message in err and time.monotonic() - start < 1 and not (tmp_path / "out").exists(), err
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        from_pretrained(str(hf_copy))


@pytest.mark.parametrize("index", ['["model.safetensors"]', '{"weight_map": ["model.safetensors"]}', '{"meta": 1}'])
def test_an_hf_index_with_the_wrong_types(hf_copy, tmp_path, capsys, index):
    (hf_copy / "model.safetensors.index.json").write_text(index)
    err = refused(convert, "hf-to-native", "--input", hf_copy, "--output", tmp_path / "out", "--tp", "1", capsys=capsys)
    assert "model.safetensors.index.json" in err and not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def sweep():
    return script("sweep")


def test_sweep_script_onto_its_config(sweep, tmp_path, capsys):
    config = tmp_path / "redi.yaml"
    shutil.copy(CONFIG, config)
    kept = snapshot(config)
    err = refused(sweep, "--config", config, "--preset", "redi", "--model", "m", "--data", "d", "--out", tmp_path / "runs",
                  "--slurm", config, capsys=capsys)
    assert "refused, it would overwrite" in err and snapshot(config) == kept and not (tmp_path / "runs").exists()


def test_sweep_runs_inside_their_data(sweep, tmp_path, capsys):
    (tmp_path / "data").mkdir()
    err = refused(sweep, "--config", CONFIG, "--preset", "redi", "--model", "m", "--data", tmp_path / "data", "--out",
                  tmp_path / "data", capsys=capsys)
    assert "refused, it would overwrite" in err and not os.listdir(tmp_path / "data")


def test_sweep_preset_of_another_loss(sweep, tmp_path, capsys):
    err = refused(sweep, "--config", CONFIG, "--preset", "dpo", "--model", "m", "--data", "d", "--out",
                  tmp_path / "runs", capsys=capsys)
    assert "--preset dpo sweeps dpo's settings, but" in err and "loss.type redi" in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("grid, message", [("optim.learning_rate=1e-6,2e-6", "no key 'learning_rate' in optim"),
                                           ("loss.alpha=0.5,fast", "loss.alpha: 'fast' is not a valid float"),
                                           ("optim.lr=1e-6,inf", "optim.lr: 'inf' is not a valid float")])
def test_sweep_grid_values_the_config_cannot_take(sweep, tmp_path, capsys, grid, message):
    err = refused(sweep, "--config", CONFIG, "--grid", grid, "--model", "m", "--data", "d", "--out", tmp_path / "runs",
                  capsys=capsys)
    assert message in err and "run " in err and not (tmp_path / "runs").exists()


def test_plot_metrics_onto_its_metrics(tmp_path, capsys):
    metrics = tmp_path / "run" / "metrics.jsonl"
    metrics.parent.mkdir()
    metrics.write_text(json.dumps({"step": 1, "loss": 0.5}) + "\n")
    kept = snapshot(metrics)
    err = refused(plot_metrics.main, metrics.parent, "--output", metrics, capsys=capsys)
    assert "refused, it would overwrite" in err and snapshot(metrics) == kept


def test_plot_metrics_names_a_broken_line(tmp_path, capsys):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "lo\n{"step": 3}\n')
    err = refused(plot_metrics.main, tmp_path / "metrics.jsonl", "--output", tmp_path / "f.png", capsys=capsys)
    assert "metrics.jsonl: line 2 is not JSON" in err and not (tmp_path / "f.png").exists()


def test_golden_steps_output_onto_the_recording_it_compares_with(tmp_path, capsys):
    recorded = tmp_path / "golden.json"
    recorded.write_text('{"recorded": true}')
    err = refused(script("golden_steps"), "--output", recorded, "--compare", recorded, capsys=capsys)
    assert "refused, it would overwrite" in err and recorded.read_text() == '{"recorded": true}'


def test_the_recipe_s_outputs_over_its_inputs(tmp_path, monkeypatch, capsys):
    from megatron_redi.recipe.__main__ import main as recipe

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    for name, value in {"MODEL": tmp_path / "model", "RAW": tmp_path / "raw", "BENCH": tmp_path / "bench",
                        "OUT": tmp_path / "model" / "runs"}.items():
        monkeypatch.setenv(name, str(value))
    err = refused(recipe, "table1", capsys=capsys)
    assert "refused, it would overwrite" in err and os.listdir(tmp_path / "model") == ["config.json"]


def test_multirank_check_names_a_missing_input_at_once(tmp_path, capsys):
    import time

    start = time.monotonic()
    err = refused(script("multirank_check"), "--model", tmp_path / "nothing", "--data", tmp_path / "none",
                  "--benchmark", tmp_path / "b.jsonl", "--output", tmp_path / "out", capsys=capsys)
    assert f"{tmp_path / 'nothing'}: no such directory (--model must be a local directory" in err
    assert time.monotonic() - start < 30 and not (tmp_path / "out").exists()


def test_a_temporary_file_left_by_a_killed_writer_is_removed_by_the_next(tmp_path):
    """An evaluation killed while a result file was flushed leaves .NAME.tmp-PID; the rerun's
    write of that file removes it."""
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".math500.jsonl.tmp-{int(dead.stdout)}"
    stale.write_text("half a result")
    with atomic.atomic_file(str(tmp_path / "math500.jsonl")) as f:
        f.write("whole\n")
    assert not stale.exists() and (tmp_path / "math500.jsonl").read_text() == "whole\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["math500.jsonl"]


def test_a_directory_is_replaced_in_one_step(tmp_path, monkeypatch):
    """publish() swaps the new directory with the old one (renameat2 RENAME_EXCHANGE), so that at
    no moment is there neither: a kill anywhere leaves one whole. Where the filesystem cannot
    swap, two renames follow each other."""
    out, new = tmp_path / "step_00000001", tmp_path / ".step_00000001.tmp"
    for path, text in ((out, "old"), (new, "new")):
        path.mkdir()
        (path / "weights").write_text(text)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    can_swap = atomic._exchange(str(tmp_path / "a"), str(tmp_path / "b"))  # Linux on ext4, xfs, btrfs, tmpfs...
    seen = []
    rename = os.rename
    monkeypatch.setattr(os, "rename", lambda a, b: (seen.append(os.path.exists(out)), rename(a, b))[1])
    atomic.publish(str(new), str(out))
    assert (out / "weights").read_text() == "new" and not new.exists()
    assert seen == ([] if can_swap else [True, False])  # one exchange, no rename at all
    (new.mkdir(), (new / "weights").write_text("newer"))
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)  # a filesystem that cannot swap
    atomic.publish(str(new), str(out))
    assert (out / "weights").read_text() == "newer" and seen[-2:] == [True, False]
