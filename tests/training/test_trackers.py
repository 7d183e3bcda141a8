"""train.trackers: MLflow and W&B written for real (a local MLflow store read back through MLflow's
own client; W&B offline, its run file read back), a tracker that cannot start stops the run before
its first step, one that fails later is warned about and the run goes on."""

import glob
import json
import struct
import time

import pytest
from multirank import run_ranks
from test_trainer import config, metrics

from megatron_redi.train import main
from megatron_redi.training import Trainer, TrainConfigError
from megatron_redi.training.trackers import IDS_FILE, MLflow, TrackerError

mlflow = pytest.importorskip("mlflow")


def _numbers(row):
    return {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"}


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    uri = f"file://{tmp_path / 'mlruns'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "redi-tests")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for this opt-in to a file store
    return mlflow.MlflowClient(uri)


def test_mlflow_holds_every_metric_at_its_step_the_config_and_a_resume(tiny_run_inputs, tmp_path, mlflow_store):
    data, model = tiny_run_inputs
    out = tmp_path / "run"
    track = ("--train.trackers", "tensorboard,mlflow", "--checkpoint.every", "2")
    Trainer(config(data, model, out, *track, "--train.max_steps", "2")).run()
    Trainer(config(data, model, out, *track, "--train.max_steps", "4")).run()  # resumed: the same MLflow run
    run_id = json.loads((out / IDS_FILE).read_text())["mlflow"]
    runs = mlflow_store.search_runs([mlflow_store.get_experiment_by_name("redi-tests").experiment_id])
    assert [r.info.run_id for r in runs] == [run_id] and runs[0].info.status == "FINISHED"
    rows = metrics(out)
    for key in _numbers(rows[0]):
        history = sorted((m.step, m.value) for m in mlflow_store.get_metric_history(run_id, key))
        assert history == [(r["step"], pytest.approx(float(r[key]), rel=1e-6, abs=1e-8)) for r in rows if key in r], key
    params = runs[0].data.params
    assert params["loss.type"] == "redi" and params["optim.lr"] == "0.001" and params["train.max_steps"] == "2"


def _two_rank_run(data, model, out):
    Trainer(config(data, model, out, "--train.trackers", "mlflow", "--parallel.tensor_parallel", "2")).run()


def test_only_rank_0_tracks(tiny_run_inputs, tmp_path, mlflow_store):
    data, model = tiny_run_inputs
    run_ranks(2, _two_rank_run, data, model, tmp_path / "run")
    (run,) = mlflow_store.search_runs([mlflow_store.get_experiment_by_name("redi-tests").experiment_id])
    assert [m.step for m in mlflow_store.get_metric_history(run.info.run_id, "loss")] == [1, 2, 3, 4]


def test_an_event_is_a_tag_and_a_tracker_failing_mid_run_is_left_out(tiny_run_inputs, tmp_path, mlflow_store,
                                                                     monkeypatch):
    data, model = tiny_run_inputs
    out = tmp_path / "run"
    log = MLflow.log

    def fails_at_step_3(self, step, scalars):
        if step == 3:
            raise ConnectionError("the tracking server went away")
        log(self, step, scalars)

    monkeypatch.setattr(MLflow, "log", fails_at_step_3)
    trainer = Trainer(config(data, model, out, "--train.trackers", "mlflow"))
    trainer.logger.event(0, "chosen and rejected LogPS fell together")
    with pytest.warns(UserWarning, match="tracker mlflow failed .*went away.*metrics.jsonl has every step"):
        trainer.run()
    assert [r["step"] for r in metrics(out)] == [1, 2, 3, 4]  # the record is whole
    run_id = json.loads((out / IDS_FILE).read_text())["mlflow"]
    assert [m.step for m in mlflow_store.get_metric_history(run_id, "loss")] == [1, 2]
    assert mlflow_store.get_run(run_id).data.tags["event.step_0"] == "chosen and rejected LogPS fell together"


def test_a_tracker_that_cannot_start_stops_the_run_before_its_first_step(tiny_run_inputs, tmp_path, monkeypatch,
                                                                         capsys):
    data, model = tiny_run_inputs
    out = tmp_path / "run"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    args = ["--model.path", model, "--data.path", data, "--model.dtype", "fp32", "--train.output_dir", str(out),
            "--train.max_steps", "2", "--train.progress", "false", "--train.trackers", "mlflow"]
    assert main(args) == 2
    assert "train.trackers mlflow: could not start" in capsys.readouterr().err
    assert not (out / "metrics.jsonl").exists() or metrics(out) == []
    assert not (out / "checkpoints").exists() or not list((out / "checkpoints").iterdir())

    monkeypatch.setitem(__import__("sys").modules, "wandb", None)  # as if not installed
    with pytest.raises(TrackerError, match=r"train.trackers wandb: the wandb package is not installed "
                                           r"\(pip install 'megatron_redi\[wandb\]'\)"):
        Trainer(config(data, model, tmp_path / "other", "--train.trackers", "wandb"))
    with pytest.raises(TrainConfigError, match="train.trackers: unknown comet"):
        config(data, model, tmp_path / "third", "--train.trackers", "mlflow,comet")


def _wandb_records(path):
    """The records of a W&B run file: LevelDB's log format (32 KiB blocks of checksum, length, type
    and data) after a 7-byte header, each record a protobuf Record."""
    from wandb.proto.wandb_internal_pb2 import Record

    data = open(path, "rb").read()
    assert data[:4] == b":W&B"
    pos, block, whole, pending = 7, 32768, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = struct.unpack("<HB", data[pos + 4:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:
            whole.append(chunk)
        elif kind == 2:
            pending = chunk
        elif kind in (3, 4):
            pending += chunk
            if kind == 4:
                whole.append(pending)
    records = []
    for raw in whole:
        record = Record()
        record.ParseFromString(raw)
        records.append(record)
    return records


def test_wandb_offline_holds_every_metric_at_its_step_and_the_config(tiny_run_inputs, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    data, model = tiny_run_inputs
    out = tmp_path / "run"
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_PROJECT", "redi-tests")
    Trainer(config(data, model, out, "--train.trackers", "wandb", "--train.max_steps", "3")).run()
    (run_file,) = glob.glob(str(out / "wandb" / "offline-run-*" / "run-*.wandb"))
    deadline = time.time() + 60
    while True:  # W&B's service process writes the file behind the run: read it once it holds the run's end
        try:
            records = _wandb_records(run_file)
        except Exception:  # noqa: BLE001 - a record half written: read again
            records = []
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.time() > deadline:
            break
        time.sleep(0.2)
    history = {}
    for r in records:
        if r.WhichOneof("record_type") == "history":
            items = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item}
            history[items["_step"]] = items
    rows = metrics(out)
    assert sorted(history) == [1, 2, 3]
    for row in rows:
        for key, value in _numbers(row).items():
            assert history[row["step"]][key] == pytest.approx(value, rel=1e-6, abs=1e-8), (row["step"], key)
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    config_seen = {i.key: json.loads(i.value_json) for i in run.config.update}
    assert config_seen["loss"]["type"] == "redi" and config_seen["train"]["max_steps"] == 3
    assert run.project == "redi-tests" and json.loads((out / IDS_FILE).read_text()) == {"wandb": run.run_id}
