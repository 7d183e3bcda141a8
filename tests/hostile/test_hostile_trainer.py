"""Hostile input to the trainer (python -m megatron_redi.train): each mistake exits 2 with one line
naming the file, field or checkpoint, before anything slow, and loses nothing on disk; a signal
during the final save finishes it and stops with exit 3."""

import contextlib
import os
import shutil
import signal

import numpy as np
import pytest
from nothing_lost import refused, snapshot

from megatron_redi.train import main
from megatron_redi.training import Trainer, TrainingStopped, checkpointing, load_config
from megatron_redi.training.checkpoint_writer import CheckpointWriter


def _args(data, model, out, *more):
    return [str(a) for a in ["--model.path", model, "--model.dtype", "fp32", "--data.path", data, "--data.global_batch", "8",
            "--data.micro_batch_tokens", "512", "--optim.lr", "1e-3", "--train.max_steps", "1",
            "--train.output_dir", out, "--train.progress", "false", "--train.tensorboard", "false", *more]]


@pytest.fixture
def inputs(tiny_run_inputs):
    data, model = tiny_run_inputs
    before = snapshot(data, model)
    yield data, model
    assert snapshot(data, model) == before  # whatever a test did, the inputs are as they were


def test_a_data_path_that_is_a_file(inputs, tmp_path, capsys):
    data, model = inputs
    err = refused(main, *_args(os.path.join(data, "meta.json"), model, tmp_path / "run"), capsys=capsys)
    assert "meta.json" in err


def test_an_output_directory_that_is_a_file(inputs, tmp_path, capsys):
    data, model = inputs
    (tmp_path / "run").write_text("notes")
    err = refused(main, *_args(data, model, tmp_path / "run"), capsys=capsys)
    assert str(tmp_path / "run") in err and (tmp_path / "run").read_text() == "notes"


@pytest.mark.parametrize("where", ["data", "model", "inside data"])
def test_an_output_directory_over_an_input(inputs, tmp_path, capsys, where):
    data, model = inputs
    out = {"data": data, "model": model, "inside data": os.path.join(data, "run")}[where]
    assert "refused, it would overwrite" in refused(main, *_args(data, model, out), capsys=capsys)
    assert not os.path.exists(os.path.join(data, "run"))


def test_an_export_into_the_data(inputs, tmp_path, capsys):
    data, model = inputs
    err = refused(main, *_args(data, model, tmp_path / "run", "--export-hf", os.path.join(data, "hf")), capsys=capsys)
    assert "refused, it would overwrite" in err and not (tmp_path / "run").exists()  # before training


def test_a_truncated_model(inputs, tmp_path, capsys):
    data, model = inputs
    broken = tmp_path / "model"
    broken.mkdir()
    for name in os.listdir(model):
        content = open(os.path.join(model, name), "rb").read()
        (broken / name).write_bytes(content[:1000] if name.endswith(".safetensors") else content)
    err = refused(main, *_args(data, broken, tmp_path / "run"), capsys=capsys)
    assert "model.safetensors: truncated" in err and not os.path.exists(tmp_path / "run" / "checkpoints")


@pytest.mark.parametrize("flag, value, message", [
    ("--optim.lr", ".inf", "optim.lr: inf is not a valid float"),
    ("--optim.lr", "5", "optim.lr must be in (0, 1]"),
    ("--optim.lr", "nan", "optim.lr: 'nan' is not a valid float"),
    ("--optim.betas", "[0.9, 1.5]", "optim.betas must be two numbers in [0, 1)"),
    ("--optim.clip_grad", "-1", "optim.clip_grad must be at least 0"),
    ("--model.path", "[a, b]", "model.path: ['a', 'b'] is not a valid str"),
    ("--data.global_batch", "0", "data.global_batch must be at least 1"),
    ("--collapse.drop", ".nan", "collapse.drop: nan is not a valid float"),
    ("--eval.temperature", "-1", "temperature must be a finite number >= 0"),
    ("--train.max_steps", "-1", "train.max_steps must be at least 1"),
    ("--parallel.bucket_mb", "0", "parallel.bucket_mb must be a positive number"),
    ("--model.rope_theta", "-5", "model.rope_theta must be a positive number"),
    ("--loss.label_smoothing", "0.7", "label_smoothing must be in [0, 0.5)"),
    ("--eval.max_problems", "0", "eval.max_problems must be at least 1"),
])
def test_values_are_checked_as_values(inputs, tmp_path, capsys, flag, value, message):
    data, model = inputs
    assert message in refused(main, *_args(data, model, tmp_path / "run", flag, value), capsys=capsys)
    assert not (tmp_path / "run").exists()


def test_a_yaml_key_given_twice(inputs, tmp_path, capsys):
    data, model = inputs
    (tmp_path / "c.yaml").write_text("optim:\n  lr: 1.0e-6\n  warmup_ratio: 0.1\n  lr: 2.0e-6\n")
    err = refused(main, "--config", tmp_path / "c.yaml", *_args(data, model, tmp_path / "run"), capsys=capsys)
    assert "c.yaml" in err and "the key 'lr' is given twice" in err and "line 4" in err


@pytest.mark.parametrize("text, message", [
    ("? [lr, eps]\n: 1\n", "a key that is a list (['lr', 'eps']), not a name"),
    ("optim:\n  ? {lr: 1}\n  : 2\n", "a key that is a dict ({'lr': 1}), not a name"),
])
def test_a_yaml_key_that_is_a_list_or_a_mapping(inputs, tmp_path, capsys, text, message):
    data, model = inputs
    (tmp_path / "c.yaml").write_text(text)
    err = refused(main, "--config", tmp_path / "c.yaml", *_args(data, model, tmp_path / "run"), capsys=capsys)
    assert "c.yaml: not valid YAML" in err and message in err and "line" in err


def test_an_in_training_benchmark_with_an_empty_answer(inputs, tmp_path, capsys):
    data, model = inputs
    (tmp_path / "b.jsonl").write_text('{"problem": "1 + 1", "answer": "2"}\n{"problem": "2 + 2", "answer": " "}\n')
    err = refused(main, *_args(data, model, tmp_path / "run", "--eval.every", "1", "--eval.benchmark",
                               tmp_path / "b.jsonl"), capsys=capsys)
    assert "b.jsonl: line 2: field 'answer' is missing, empty" in err


def test_a_resume_with_other_batch_settings(inputs, tmp_path, capsys):
    data, model = inputs
    run = tmp_path / "run"
    assert main(_args(data, model, run, "--checkpoint.every", "1", "--train.max_steps", "2")) == 0
    kept = snapshot(run / "checkpoints", run / "metrics.jsonl", run / "config.json")
    err = refused(main, *_args(data, model, run, "--train.max_steps", "3", "--data.global_batch", "16",
                               "--data.seed", "3"), capsys=capsys)
    assert "step_00000002" in err and "data.global_batch 8 -> 16" in err and "data.seed 0 -> 3" in err
    assert snapshot(run / "checkpoints", run / "metrics.jsonl", run / "config.json") == kept


def test_a_signal_during_the_final_save_finishes_it_and_stops(inputs, tmp_path, monkeypatch):
    """SIGTERM while the last checkpoint is written: it is written whole, the run stops (exit 3 on
    the command line), and the same command then ends at once, without writing it again."""
    data, model = inputs
    run = tmp_path / "run"
    start = CheckpointWriter.start

    def save_then_signal(self, step, *args, **kwargs):
        save = start(self, step, *args, **kwargs)
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # as the save starts: the handler only records it
        return save

    monkeypatch.setattr(CheckpointWriter, "start", save_then_signal)
    cfg = load_config(None, _args(data, model, run, "--train.max_steps", "2", "--train.export_hf", tmp_path / "hf"))
    with pytest.raises(TrainingStopped, match="SIGTERM during the final save: checkpoint .*step_00000002 written; "
                                              "run the same command again to export"):
        Trainer(cfg).run()
    final = run / "checkpoints" / "step_00000002"
    assert checkpointing.is_resumable(str(final)) and not (tmp_path / "hf").exists()
    written = snapshot(final)
    monkeypatch.setattr(CheckpointWriter, "start", start)
    assert Trainer(cfg).run() == str(final)
    assert snapshot(final) == written and (tmp_path / "hf" / "config.json").exists()


def test_a_kill_while_a_resume_trims_the_metrics_keeps_the_history(tmp_path, monkeypatch):
    from megatron_redi.training import metrics

    lines = "".join(f'{{"step": {i}, "loss": 0.5}}\n' for i in range(1, 5))
    (tmp_path / "metrics.jsonl").write_text(lines)
    written = metrics.atomic_file

    @contextlib.contextmanager
    def killed_midway(path, mode="w"):
        with written(path, mode) as f:
            f.write('{"step": 1, "loss": 0.5}\n')
            raise KeyboardInterrupt  # as a kill would, half-way through the rewrite

    monkeypatch.setattr(metrics, "atomic_file", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        metrics.MetricsLogger(str(tmp_path), enabled=True, tensorboard=False, resume_step=2)
    assert (tmp_path / "metrics.jsonl").read_text() == lines and os.listdir(tmp_path) == ["metrics.jsonl"]


def test_dpo_reference_log_probs_are_one_file_with_their_reference(inputs, tmp_path):
    from megatron_redi.data import TokenizedData

    data, _ = inputs
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    pairs = TokenizedData(str(copy)).pairs
    values = np.arange(2 * len(pairs), dtype=np.float32).reshape(-1, 2)
    pairs.store_reference_logps(values, "reference A")
    again = TokenizedData(str(copy)).pairs
    assert again.stored_reference() == "reference A" and np.array_equal(again.ref_logps, values)
    stored = copy / "pairs" / "ref_logps.npz"
    stored.write_bytes(stored.read_bytes()[:100])  # a file cut short: computed again, never half used
    assert TokenizedData(str(copy)).pairs.stored_reference() is None
    assert sorted(os.listdir(copy / "pairs")) == sorted(os.listdir(os.path.join(data, "pairs")) + ["ref_logps.npz"])


def test_a_resume_from_another_model_other_data_or_another_loss(inputs, tmp_path, capsys):
    """Rerun into the same output directory with another --model.path (a model of the same shapes),
    with another dataset of the same item count, or with another loss: refused, naming each change,
    the checkpoints untouched; the same command with the run's own inputs resumes."""
    from safetensors.torch import load_file, save_file

    data, model = inputs
    run = tmp_path / "run"
    assert main(_args(data, model, run, "--checkpoint.every", "1", "--train.max_steps", "2")) == 0
    kept = snapshot(run / "checkpoints", run / "metrics.jsonl", run / "config.json")
    other_model = tmp_path / "other_model"  # the same shapes and files, other weights
    shutil.copytree(model, other_model)
    weights = load_file(other_model / "model.safetensors")
    save_file({name: 1.01 * w for name, w in weights.items()}, other_model / "model.safetensors", {"format": "pt"})
    other_data = tmp_path / "other_data"  # the same items, one token changed
    shutil.copytree(data, other_data)
    tokens = np.memmap(other_data / "pairs" / "tokens.bin", dtype=np.uint32, mode="r+")
    tokens[-1] = (tokens[-1] + 1) % 300
    tokens.flush()
    del tokens
    for where, message in ((dict(model=other_model), f"model.path holds other files than the run started from ({model})"),
                           (dict(data=other_data), f"data.path holds other files than the run started from ({data})"),
                           (dict(more=("--loss.alpha", "0.5")), "loss.alpha 0.8 -> 0.5")):
        err = refused(main, *_args(where.get("data", data), where.get("model", model), run, "--train.max_steps", "3",
                                   *where.get("more", ())), capsys=capsys)
        assert "step_00000002" in err and message in err and "choose another train.output_dir" in err, err
        assert snapshot(run / "checkpoints", run / "metrics.jsonl", run / "config.json") == kept
    copied = tmp_path / "copied_model"  # the same model elsewhere: the same input
    shutil.copytree(model, copied)
    assert main(_args(data, copied, run, "--train.max_steps", "3")) == 0


def test_a_moment_file_holding_other_tensors_is_skipped_for_the_previous_checkpoint(inputs, tmp_path, capsys):
    """Valid safetensors, the wrong tensors (a name missing, a length off by one): the newest
    checkpoint is passed over with a warning naming the file, the one before it resumed; when no
    checkpoint is left, exit 2 naming the directory."""
    from safetensors.torch import load_file, save_file

    data, model = inputs
    run = tmp_path / "run"
    assert main(_args(data, model, run, "--checkpoint.every", "1", "--train.max_steps", "2",
                      "--checkpoint.keep", "2")) == 0
    newest = run / "checkpoints" / "step_00000002" / "training" / "optim_tp00_dp00.safetensors"
    moments = load_file(newest)
    save_file({**moments, "exp_avg.1": moments["exp_avg.1"][:-1]}, newest)
    capsys.readouterr()
    with pytest.warns(UserWarning, match=r"step_00000002 is incomplete or damaged .*optim_tp00_dp00.safetensors"):
        assert main(_args(data, model, run, "--train.max_steps", "3", "--checkpoint.keep", "2")) == 0
    assert "resumed from" in capsys.readouterr().out
    for step in ("00000002", "00000003"):
        file = run / "checkpoints" / f"step_{step}" / "training" / "optim_tp00_dp00.safetensors"
        if file.exists():
            save_file({k: v for k, v in load_file(file).items() if k != "exp_avg_sq.0"}, file)
    err = refused(main, *_args(data, model, run, "--train.max_steps", "4"), capsys=capsys)
    assert "none of its" in err and "can be resumed" in err
