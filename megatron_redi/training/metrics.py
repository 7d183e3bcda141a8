"""Metrics: a JSONL file and TensorBoard, the collapse alarm, and the FLOP count behind MFU.

FLOPs of one training step (forward + backward = 3 x forward), counted as matrix products only:

    per sequence of L tokens, R of them response tokens:
      forward = 2 * P_layers * L                      weights of the decoder layers (QKV, O, MLP)
              + 2 * n_layers * L^2 * nh * hd          causal attention: QK^T and PV, each
                                                      2 L^2 nh hd / 2 under the causal mask
              + 2 * V * h * R                         the LM head, on response tokens only
      training = 3 * forward

Activation recompute is not counted (it is overhead, not model work). MFU = FLOPs / time / the
card's dense bf16 peak: ``train.peak_tflops`` when set, else the card's own rate as its vendor
states it (``card_peak_tflops``; the figure peers divide by too, so MFUs compare across projects).
"""

from __future__ import annotations

import json
import math
import os
import warnings

import torch

from ..atomic import atomic_file
from ..model_config import ModelConfig
from ..settings import ConfigError
from ..parallel import collectives
from .trackers import Trackers


# Dense (not 2:4 sparse) bf16 tensor-core rate in TFLOP/s as the vendor states it, by a part of the
# name torch.cuda.get_device_name() gives; the more specific names first.
CARD_PEAK_TFLOPS = {"H100 PCIe": 756.0, "H100 NVL": 835.0, "H200 NVL": 835.0, "H100": 989.0, "H200": 989.0,
                    "A100": 312.0}


def card_peak_tflops(name: str) -> float | None:
    """The dense bf16 peak of the card named ``name`` (None for a card not in the table)."""
    return next((peak for part, peak in CARD_PEAK_TFLOPS.items() if part in name), None)


def mfu_peak_tflops(device: torch.device, configured: float | None = None) -> float | None:
    """What MFU divides by on ``device``: ``configured`` when given, else the card's own peak; None
    (no MFU) off CUDA or for a card not in the table, which is said once."""
    if device.type != "cuda":
        return None
    if configured:
        return configured
    name = torch.cuda.get_device_name(device)
    peak = card_peak_tflops(name)
    if peak is None:
        warnings.warn(f"MFU not reported: no dense bf16 peak known for {name!r}; set train.peak_tflops "
                      "(--peak-tflops) to the card's figure")
    return peak


def step_flops(cfg: ModelConfig, seq_lengths, response_tokens: int) -> float:
    dense = 2 * cfg.num_layers * cfg.layer_matrix_parameters()
    attn = 2 * cfg.num_layers * cfg.num_heads * cfg.head_dim
    forward = sum(dense * n + attn * n * n for n in seq_lengths) + 2 * cfg.vocab_size * cfg.hidden_size * response_tokens
    return 3.0 * forward


def sum_over_dp(parallel, summed: list, kept: list = ()) -> tuple[list[float], list[float]]:
    """The scalars ``summed`` (tensors or numbers) summed over the data-parallel ranks in one
    all-reduce, and ``kept`` as they are, with one host sync for both. In float64: a step's token
    count stays exact (float32 is exact only to 2^24, which 8 ranks of 4 micro-batches of 16k tokens
    pass)."""
    def exact(v):
        return v.reshape(()).double() if torch.is_tensor(v) else torch.tensor(v, dtype=torch.float64,
                                                                               device=parallel.device)

    values = torch.stack([exact(v) for v in summed])
    collectives.all_reduce(parallel, values, parallel.dp_group)
    everything = torch.cat([values, *(exact(v).reshape(1) for v in kept)]).tolist()
    return everything[:len(summed)], everything[len(summed):]


class MetricsLogger:
    """Appends one JSON object per logged step to ``metrics.jsonl`` and passes it to the run's
    trackers (trackers.py: TensorBoard, W&B, MLflow). Only rank 0 writes. ``trackers``: their names
    (default: TensorBoard when ``tensorboard``); ``config``: the run's, for them."""

    def __init__(self, output_dir: str, enabled: bool, tensorboard: bool = True, resume_step: int = 0,
                 trackers: list[str] | None = None, config: dict | None = None):
        self.enabled = enabled
        self.path = os.path.join(output_dir, "metrics.jsonl")
        self.trackers = None
        if not enabled:
            return
        os.makedirs(output_dir, exist_ok=True)
        if resume_step and os.path.exists(self.path):  # drop what a killed run logged past the checkpoint
            with open(self.path) as f:
                kept = [line for line in f if _step_of(line) <= resume_step]
            with atomic_file(self.path) as f:  # a kill here leaves the history as it was, never empty
                f.writelines(kept)
        elif not resume_step and os.path.exists(self.path):
            os.remove(self.path)
        names = trackers if trackers is not None else ["tensorboard"] if tensorboard else []
        self.trackers = Trackers(names, output_dir, config or {}, resumed=resume_step > 0)

    def log(self, step: int, values: dict):
        if not self.enabled:
            return
        record = {"step": step, **{k: (round(v, 8) if isinstance(v, float) else v) for k, v in values.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        self.trackers.log(step, values)

    def event(self, step: int, text: str):
        """A note at a step (the collapse alarm) for the trackers; metrics.jsonl has its flag."""
        if self.enabled:
            self.trackers.event(step, text)

    def close(self):
        if self.trackers is not None:
            self.trackers.close()


def read_metrics(run: str) -> list[dict]:
    """The records of a run directory's ``metrics.jsonl`` (or of that file itself), in order; a last
    line torn by a kill mid-write is left out."""
    path = os.path.join(run, "metrics.jsonl") if os.path.isdir(run) else run
    records = []
    with open(path) as f:
        lines = f.readlines()
    for number, line in enumerate(lines, 1):
        if not line.strip() or (number == len(lines) and not line.endswith("\n")):
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: line {number} is not JSON ({e.msg}): not a metrics.jsonl of this trainer") from None
    return records


def _step_of(line: str) -> float:
    """The step a metrics line records; a torn line (a kill mid-write) counts as past any step."""
    try:
        return json.loads(line).get("step", 0) if line.endswith("\n") else math.inf
    except json.JSONDecodeError:
        return math.inf


class CollapseAlarm:
    """Fires when the mean chosen LogPS of the last ``window`` steps has fallen more than ``drop``
    nats per token below that of the first ``window`` steps while rejected LogPS fell too: the
    paper's collapse signature (Section 4.3), where symmetric REDI lowers both together.
    ``update`` returns the warning once, at the step it first fires."""

    def __init__(self, window: int, drop: float):
        self.window, self.drop = window, drop
        self.chosen, self.rejected = [], []
        self.fired = False

    def update(self, chosen_mean: float, rejected_mean: float) -> str | None:
        self.chosen.append(chosen_mean)
        self.rejected.append(rejected_mean)
        w = self.window
        if self.fired or len(self.chosen) < 2 * w:
            return None
        first_c, first_r = sum(self.chosen[:w]) / w, sum(self.rejected[:w]) / w
        last_c, last_r = sum(self.chosen[-w:]) / w, sum(self.rejected[-w:]) / w
        if first_c - last_c > self.drop and last_r < first_r:
            self.fired = True
            return (f"collapse alarm: chosen LogPS fell from {first_c:.3f} to {last_c:.3f} and rejected from "
                    f"{first_r:.3f} to {last_r:.3f} nats/token (the paper's collapse signature; consider a "
                    "lower learning rate or a smaller alpha)")
        return None
