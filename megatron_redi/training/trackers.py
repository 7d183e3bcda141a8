"""Where a run's metrics go besides metrics.jsonl (the record): TensorBoard, Weights & Biases, MLflow.

    train.trackers: tensorboard (the default), wandb, mlflow; several comma-separated

Each is set up the way its users already do, from its own environment variables: W&B from
``WANDB_PROJECT`` (default megatron_redi), ``WANDB_ENTITY``, ``WANDB_MODE`` (offline: no network,
``wandb sync`` later) and ``WANDB_DIR`` (default the run's directory); MLflow from
``MLFLOW_TRACKING_URI`` (default ./mlruns) and ``MLFLOW_EXPERIMENT_NAME`` (default
megatron_redi). Rank 0 writes: the run's config (W&B's config, MLflow's parameters as
``section.key``), every finite number of each metrics.jsonl line at its step, and events (the
collapse alarm) as text. A resumed run continues the same W&B or MLflow run (their ids are kept in
``trackers.json`` beside metrics.jsonl).

A tracker that cannot start (its package missing, a tracking server unreachable) stops the run
before its first step, naming it; one that fails later is warned about once and left out, and the
run goes on.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings

from ..atomic import atomic_file
from ..settings import ConfigError

IDS_FILE = "trackers.json"


class TrackerError(ConfigError):
    pass


class TensorBoard:
    def __init__(self, output_dir: str, config: dict, run_id: str | None):
        from torch.utils.tensorboard import SummaryWriter

        self.writer, self.run_id = SummaryWriter(os.path.join(output_dir, "tensorboard")), None

    def log(self, step: int, scalars: dict[str, float]) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, step)

    def event(self, step: int, text: str) -> None:
        self.writer.add_text("events", text, step)

    def close(self) -> None:
        self.writer.close()


class WandB:
    def __init__(self, output_dir: str, config: dict, run_id: str | None):
        import wandb

        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "megatron_redi"),
                              dir=os.environ.get("WANDB_DIR", output_dir), name=os.path.basename(output_dir),
                              config=config, id=run_id, resume="allow" if run_id else None)
        self.run_id = self.run.id

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log(scalars, step=step)

    def event(self, step: int, text: str) -> None:
        self.run.log({"event": text}, step=step)

    def close(self) -> None:
        self.run.finish()


class MLflow:
    def __init__(self, output_dir: str, config: dict, run_id: str | None):
        from mlflow import MlflowClient
        from mlflow.entities import Param

        self.client = MlflowClient()  # MLFLOW_TRACKING_URI, or ./mlruns
        if run_id is None:
            name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "megatron_redi")
            experiment = self.client.get_experiment_by_name(name)
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
            run_id = self.client.create_run(experiment_id, run_name=os.path.basename(output_dir)).info.run_id
            params = [Param(k, (v if isinstance(v, str) else json.dumps(v))[:6000]) for k, v in _flat(config).items()]
            for first in range(0, len(params), 100):  # MLflow's most per call
                self.client.log_batch(run_id, params=params[first:first + 100])
        else:  # a resumed run: the same MLflow run, open again
            self.client.update_run(run_id, status="RUNNING")
        self.run_id = run_id

    def log(self, step: int, scalars: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in scalars.items()])

    def event(self, step: int, text: str) -> None:
        self.client.set_tag(self.run_id, f"event.step_{step}", text)

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


TRACKERS = {"tensorboard": TensorBoard, "wandb": WandB, "mlflow": MLflow}


def parse(names: str) -> list[str]:
    """The trackers named in ``names`` (comma-separated), checked against the known ones."""
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in TRACKERS]
    if unknown:
        raise TrackerError(f"train.trackers: unknown {', '.join(unknown)} (known: {', '.join(TRACKERS)})")
    return list(dict.fromkeys(chosen))


class Trackers:
    """The chosen trackers of a run, started now (rank 0 only)."""

    def __init__(self, names: list[str], output_dir: str, config: dict, resumed: bool):
        ids_path = os.path.join(output_dir, IDS_FILE)
        known = {}
        if resumed and os.path.exists(ids_path):
            with open(ids_path) as f:
                known = json.load(f)
        self.started = {}
        for name in names:
            try:
                self.started[name] = TRACKERS[name](output_dir, config, known.get(name))
            except ImportError:
                if name == "tensorboard":  # the default: its absence was never an error
                    warnings.warn("tensorboard is not installed: metrics go to metrics.jsonl only")
                    continue
                self.close()
                raise TrackerError(f"train.trackers {name}: the {name} package is not installed (pip install "
                                   f"'megatron_redi[{name}]')") from None
            except Exception as e:  # a server refusing, a bad URI: before the first step, not hours later
                self.close()
                raise TrackerError(f"train.trackers {name}: could not start ({type(e).__name__}: {e})") from None
        ids = {name: t.run_id for name, t in self.started.items() if t.run_id}
        if ids:
            with atomic_file(ids_path) as f:
                json.dump(ids, f)

    def log(self, step: int, values: dict) -> None:
        scalars = {k: float(v) for k, v in values.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        self._each("log", step, scalars)

    def event(self, step: int, text: str) -> None:
        self._each("event", step, text)

    def _each(self, method: str, *args) -> None:
        for name, tracker in list(self.started.items()):
            try:
                getattr(tracker, method)(*args)
            except Exception as e:  # the run goes on: metrics.jsonl is the record
                warnings.warn(f"tracker {name} failed ({type(e).__name__}: {e}); left out for the rest of the run, "
                              "metrics.jsonl has every step")
                del self.started[name]

    def close(self) -> None:
        for tracker in self.started.values():
            try:
                tracker.close()
            except Exception as e:  # noqa: BLE001 - closing must not hide the run's own outcome
                warnings.warn(f"a tracker did not close cleanly ({e})")
        self.started = {}


def _flat(config: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
