"""What the trainer refuses so that nothing is lost: exports that would destroy a run, configs that
would delete checkpoints or train on nonsense, resumption over another layout's checkpoints, token
data the model cannot read; and checkpoint writes that fail whole."""

import os

import numpy as np
import pytest
import torch

from megatron_redi.atomic import OutputExistsError
from megatron_redi.checkpoint.safetensors_io import StreamingWriter
from megatron_redi.checkpoint import CheckpointError
from megatron_redi.data import DatasetError, TokenizedData
from megatron_redi.training import TrainConfigError, Trainer, checkpointing
from megatron_redi.training.metrics import MetricsLogger

from test_trainer import config, metrics


def _tree(path):
    return sorted(os.path.relpath(os.path.join(d, f), path) for d, _, files in os.walk(path) for f in files)


@pytest.fixture
def finished_run(tiny_run_inputs, tmp_path):
    data, model = tiny_run_inputs
    run = tmp_path / "run"
    Trainer(config(data, model, run, "--train.max_steps", "2")).run()
    return data, model, run


@pytest.mark.parametrize("target", ["run", "parent", "checkpoints", "inside_checkpoints", "a_checkpoint"])
def test_export_that_would_destroy_the_run_is_refused_before_training(finished_run, target):
    data, model, run = finished_run
    before = _tree(run)
    path = {"run": run, "parent": run.parent, "checkpoints": run / "checkpoints",
            "inside_checkpoints": run / "checkpoints" / "hf", "a_checkpoint": run / "checkpoints" / "step_00000002"}[target]
    with pytest.raises(OutputExistsError, match="refused"):
        Trainer(config(data, model, run, "--train.max_steps", "4", "--train.export_hf", path,
                       "--train.export_overwrite", "true"))
    assert _tree(run) == before


def test_export_into_a_non_empty_directory_needs_overwrite(finished_run, tmp_path):
    data, model, run = finished_run
    target = tmp_path / "hf"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="not empty"):
        Trainer(config(data, model, run, "--train.max_steps", "4", "--train.export_hf", target))
    assert (target / "notes.txt").read_text() == "mine"
    Trainer(config(data, model, run, "--train.max_steps", "4", "--train.export_hf", target,
                   "--train.export_overwrite", "true")).run()
    assert (target / "config.json").exists() and not (target / "notes.txt").exists()


def test_a_directory_holding_checkpoints_is_never_an_export_target(finished_run, tmp_path):
    data, model, run = finished_run
    other = tmp_path / "other_run"
    (other / "checkpoints" / "step_00000001").mkdir(parents=True)
    with pytest.raises(OutputExistsError, match="holds checkpoints"):
        checkpointing.check_export_target(str(other), str(run), overwrite=True)


@pytest.mark.parametrize("override,message", [
    (("--checkpoint.keep", "0"), "checkpoint.keep must be at least 1"),
    (("--checkpoint.every", "-1"), "checkpoint.every must be at least 0"),
    (("--optim.lr", "nan"), "optim.lr: 'nan' is not a valid float"),
    (("--optim.warmup_ratio", "nan"), "optim.warmup_ratio"),
    (("--optim.betas", "[0.9, 0.99, 0.999]"), "optim.betas must be two numbers"),
    (("--optim.weight_decay", "inf"), "optim.weight_decay: 'inf' is not a valid float"),
    (("--optim.weight_decay", "-1"), "optim.weight_decay must be at least 0"),
])
def test_config_values_that_lose_data_or_train_on_nonsense_are_refused(override, message):
    with pytest.raises(TrainConfigError, match=message):
        config("data", "model", "out", *override)


def test_a_section_given_as_a_list_in_yaml_names_it(tmp_path):
    from megatron_redi.training import load_config

    path = tmp_path / "c.yaml"
    path.write_text("model: [a, b]\n")
    with pytest.raises(TrainConfigError, match=r"c.yaml.model: a section must be a mapping of keys, got list"):
        load_config(str(path), ["--data.path", "d"])


def test_starting_over_is_refused_where_checkpoints_exist(finished_run):
    data, model, run = finished_run
    with pytest.raises(CheckpointError, match="holds checkpoints of an earlier run"):
        Trainer(config(data, model, run, "--checkpoint.resume", "false"))
    assert (run / "checkpoints" / "step_00000002").exists()


def test_a_failed_checkpoint_write_leaves_nothing_and_older_ones_intact(finished_run, monkeypatch):
    data, model, run = finished_run
    trainer = Trainer(config(data, model, run, "--train.max_steps", "4"))
    before = _tree(run / "checkpoints")

    def disk_full(self, name, tensor):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(StreamingWriter, "write", disk_full)
    trainer.step = 3
    with pytest.raises(CheckpointError, match="No space left on device.*older checkpoints are intact"):
        trainer.save_checkpoint()
    assert _tree(run / "checkpoints") == before  # no .step_00000003.tmp left taking the space


def _copy_data(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_token_ids_outside_the_vocabulary_name_file_and_item(tiny_run_inputs, tmp_path):
    data = _copy_data(tiny_run_inputs[0], tmp_path / "data")
    tokens = np.memmap(data / "pairs" / "tokens.bin", dtype=np.uint32, mode="r+")
    items = np.load(data / "pairs" / "items.npy")
    tokens[int(items["offset"][3]) + 1] = 10**6
    tokens.flush()
    with pytest.raises(DatasetError, match=r"pairs/tokens.bin: item 3 holds token id 1000000, outside the "
                                           r"model's vocabulary of 512"):
        TokenizedData(str(data)).check(512)


def test_a_truncated_token_file_is_refused_at_load(tiny_run_inputs, tmp_path):
    data = _copy_data(tiny_run_inputs[0], tmp_path / "data")
    path = data / "sft" / "tokens.bin"
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    with pytest.raises(DatasetError, match=r"sft/tokens.bin: item \d+ ends at token \d+, past the file's"):
        Trainer(config(str(data), tiny_run_inputs[1], tmp_path / "run"))


def test_a_torn_last_metrics_line_is_dropped_on_resume(tmp_path):
    with open(tmp_path / "metrics.jsonl", "w") as f:
        f.write('{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 0.9}\n{"step": 3, "lo')
    MetricsLogger(str(tmp_path), True, False, resume_step=2)
    assert [r["step"] for r in metrics(tmp_path)] == [1, 2]


def test_resumed_run_still_reproduces_after_a_failed_save(finished_run):
    # the guard above must not disturb what the trainer keeps between steps
    data, model, run = finished_run
    Trainer(config(data, model, run, "--train.max_steps", "3")).run()
    assert [r["step"] for r in metrics(run)] == [1, 2, 3]
    assert torch.isfinite(torch.tensor([r["loss"] for r in metrics(run)])).all()


def test_a_dataset_smaller_than_one_global_batch_is_an_error(tiny_run_inputs, tmp_path):
    data, model = tiny_run_inputs
    with pytest.raises(DatasetError, match=r"the dataset has \d+ items, fewer than one global batch of 100000"):
        Trainer(config(data, model, tmp_path / "run", "--data.global_batch", "100000"))
