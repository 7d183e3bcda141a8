"""The trainer's configuration: one small dataclass per section of the YAML file.

    python -m megatron_redi.train --config examples/configs/paper/qwen2.5-math-1.5b_redi.yaml --optim.lr 2e-6

A YAML file (read with yaml's safe loader: no code runs) gives the sections below; ``--section.key
value`` overrides any field (values parsed as YAML scalars). Unknown sections or keys, a key given
twice, a value of the wrong type (a list for a path, an infinite number) are errors.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import ClassVar

import yaml

from ..cli import UserError
from ..settings import COMPUTE_DTYPES, ConfigError, check_settings, choice, load_yaml, setting
from ..eval.protocol import Protocol
from .trackers import parse as parse_trackers
from ..losses import LossConfig
from ..model import RECOMPUTE_MODES
from ..model.attention import BACKENDS

STAGES = ("sft", "pairwise")
SCHEDULES = ("epochs", "max_steps")
REFERENCE_MODES = ("prepass", "model")


class TrainConfigError(UserError):
    pass


@dataclass
class ModelSection:
    path: str = setting("", "HF or native checkpoint to start from")
    dtype: str = choice("bf16", COMPUTE_DTYPES, "compute dtype of the forward/backward (master weights are fp32)")
    recompute: str = choice("auto", RECOMPUTE_MODES, "auto: selective, + full where memory needs it")
    attention_backend: str = choice("auto", BACKENDS, "auto: SDPA per sequence, varlen for many short ones")
    rope_theta: float | None = setting(None, "override the checkpoint's (stage 1 of the paper: 300000)", positive=True)
    max_position_embeddings: int | None = setting(None, "override (stage 1: 32768)", at_least=1)

@dataclass
class ParallelSection:
    tensor_parallel: int = setting(1, "TP size: divides the query heads, the vocabulary and the MLP width", at_least=1)
    sequence_parallel: bool = setting(True, "with tensor_parallel > 1")
    context_parallel: int = setting(1, "CP size: each micro-batch's tokens split over this many ranks (long sequences)", at_least=1)
    zero1: bool = setting(False, "shard the optimizer state (and the update) over data-parallel ranks")
    bucket_mb: float = setting(100.0, "data-parallel gradient all-reduce bucket, MB of fp32", positive=True)
    # A dead rank ends the job instead of hanging it: the timeout must exceed one rank's longest work
    # alone (an HF export of the model, the slowest share of an evaluation or of DPO's pre-pass).
    timeout_minutes: float = setting(60.0, "how long a collective may wait for the other ranks before the run ends", positive=True)


@dataclass
class DataSection:
    path: str = setting("", "directory written by tools/preprocess_data.py")
    global_batch: int = setting(32, "pairs (stage 2) or sequences (stage 1) per optimizer step", at_least=1)
    micro_batch_tokens: int = setting(16384, "token budget of one packed micro-batch per rank", at_least=1)
    seed: int = setting(0, "the sampler's: the order of items over epochs")
    shuffle: bool = setting(True, "a new random order of items every epoch (false: dataset order)")


@dataclass
class OptimSection:
    lr: float = setting(1e-6, "peak learning rate")
    betas: tuple[float, float] = setting((0.9, 0.999), "AdamW's")
    eps: float = setting(1e-8, "AdamW's", at_least=0)
    weight_decay: float = setting(1e-4, "not applied to biases and norm weights", at_least=0)
    warmup_ratio: float = setting(0.1, "linear warmup over this share of the steps, then linear decay to 0")
    clip_grad: float = setting(1.0, "max global gradient norm (0: no clipping)", at_least=0)


@dataclass
class CollapseSection:
    """The paper's collapse signature: chosen and rejected LogPS falling together (Section 4.3)."""

    window: int = setting(10, "steps averaged on each side of the comparison", at_least=1)
    drop: float = setting(0.1, "nats per token below the first window's chosen LogPS that raise the alarm", positive=True)
    stop: bool = setting(False, "stop the run when the alarm fires")


@dataclass
class TrainSection:
    stage: str = choice("pairwise", STAGES, "sft (stage 1) or pairwise (stage 2: loss.type says which)")
    epochs: int = setting(1, "passes over the data; the learning-rate schedule spans them", at_least=1)
    max_steps: int | None = setting(None, "stop after this many steps; the schedule still spans the epochs unless...", at_least=1)
    schedule: str = choice("epochs", SCHEDULES, "...max_steps: warmup and decay over max_steps (HF's behaviour)")
    output_dir: str = setting("runs/default", "checkpoints, metrics.jsonl, tensorboard/, config.json")
    export_hf: str | None = setting(None, "write an HF checkpoint here at the end (a new or empty directory)")
    export_overwrite: bool = setting(False, "replace a non-empty export_hf directory (never one holding checkpoints)")
    seed: int = setting(1234, "torch's, and generation's during evaluation")
    max_bad_steps: int = setting(5, "consecutive non-finite steps (skipped) that stop the run", at_least=1)
    log_every: int = setting(1, "steps between metrics.jsonl lines", at_least=1)
    tensorboard: bool = setting(True, "also write TensorBoard logs (when tensorboard is installed); false "
                                "leaves tensorboard out of train.trackers")
    trackers: str = setting("tensorboard", "where metrics go besides metrics.jsonl: tensorboard, wandb, mlflow, "
                            "comma-separated (configured by their own environment variables: docs/reference.md)")
    peak_tflops: float | None = setting(None, "for MFU on GPU: the card's dense bf16 TFLOP/s (default: its vendor's "
                                        "figure for a known card, else no MFU; docs/performance.md)", positive=True)
    progress: bool = setting(True, "a progress line (rank 0) with loss and LogPS")

@dataclass
class CheckpointSection:
    every: int | str = setting(0,
        "steps between checkpoints (0: only at the end), or \"epoch\": at the end of each epoch", at_least=0)
    keep: int = setting(3, "newest checkpoints kept whole (weights and training state: resumable)", at_least=1)
    keep_weights: bool = setting(True,
        "older ones keep their weights (bf16, no training state) for picking the best step")
    resume: bool = setting(True,
        "continue from the newest good checkpoint in output_dir (false: output_dir must hold none)")
    async_save: bool = setting(True,
        "copy the state to host memory and write it while training goes on (false: training waits for the write)")


@dataclass
class ReferenceSection:
    """DPO's reference model: its log-probs computed once before training ("prepass", stored
    beside the data) or by a frozen copy run in every step ("model")."""

    mode: str = choice("prepass", REFERENCE_MODES, "prepass: computed once, stored beside the data")
    path: str | None = setting(None, "reference checkpoint (default: model.path)")

@dataclass
class EvalSection(Protocol):
    """In-training evaluation on a benchmark, for the accuracy curve of the paper's Figure 6. Its
    defaults are a quick look, not the paper's protocol: one sample of up to 4,096 tokens on the
    first 100 problems, at the paper's temperature, top-p and prompt (16 samples of up to 32,768
    tokens would take hours per evaluation, with a KV cache beside the training's memory). The
    paper's protocols run on the saved checkpoints: tools/evaluate.py. The first evaluation of a
    run says what each costs."""

    SETTINGS_PREFIX: ClassVar[str] = "eval."  # its checks run in Protocol's __post_init__: name the section
    samples: int = setting(1, "generations per problem")
    max_new_tokens: int = setting(4096, "per generation")
    every: int = setting(0, "steps between evaluations on the benchmark (0: never)", at_least=0)
    benchmark: str | None = setting(None, "JSONL of {\"problem\", \"answer\"}")
    max_problems: int | None = setting(100, "the benchmark's first N problems only (None: all)", at_least=1)


@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    parallel: ParallelSection = field(default_factory=ParallelSection)
    data: DataSection = field(default_factory=DataSection)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    collapse: CollapseSection = field(default_factory=CollapseSection)
    reference: ReferenceSection = field(default_factory=ReferenceSection)
    eval: EvalSection = field(default_factory=EvalSection)

    def validate(self) -> TrainConfig:
        """Every field's declared choices and limits (``setting``), then the rules across fields."""
        for section in dataclasses.fields(self):  # every field's declared choices and limits
            try:
                check_settings(getattr(self, section.name), section.name + ".")
            except ConfigError as e:
                raise TrainConfigError(str(e)) from None
        if not self.model.path:
            raise TrainConfigError("model.path is required (an HF or native checkpoint)")
        if not self.data.path:
            raise TrainConfigError("data.path is required (run tools/preprocess_data.py first)")
        if self.train.schedule == "max_steps" and not self.train.max_steps:
            raise TrainConfigError("train.schedule max_steps needs train.max_steps")
        if (self.train.stage == "sft") != (self.loss.type == "sft"):
            raise TrainConfigError(f"train.stage {self.train.stage!r} does not go with loss.type {self.loss.type!r}")
        try:
            parse_trackers(self.train.trackers)
        except ConfigError as e:
            raise TrainConfigError(str(e)) from None
        if isinstance(self.checkpoint.every, str) and self.checkpoint.every != "epoch":
            raise TrainConfigError(f"checkpoint.every must be a number of steps or epoch, got {self.checkpoint.every!r}")
        o = self.optim
        if not 0 < o.lr <= 1:  # above 1, AdamW moves every weight by more than its own scale per step
            raise TrainConfigError(f"optim.lr must be in (0, 1], got {o.lr}")
        if not 0 <= o.warmup_ratio < 1:  # NaN fails this too
            raise TrainConfigError(f"optim.warmup_ratio must be in [0, 1), got {o.warmup_ratio}")
        if len(o.betas) != 2 or not all(0 <= b < 1 for b in o.betas):
            raise TrainConfigError(f"optim.betas must be two numbers in [0, 1), got {list(o.betas)}")
        return self


def _coerce(value, annotation: str, where: str):
    """A YAML value as the field's declared type ("1e-6" is a string to YAML, a float here)."""
    optional = annotation.endswith("| None")
    base = annotation.replace("| None", "").strip()
    if base == "int | str":  # a count, or a word the field names ("epoch")
        if isinstance(value, str) and not re.fullmatch(r"[+-]?\d+", value.strip()):
            return value
        base = "int"
    if value is None:
        if optional:
            return None
        raise TrainConfigError(f"{where} may not be empty")
    try:
        if base == "float":
            if isinstance(value, bool) or not math.isfinite(float(value)):  # inf, nan: never a setting
                raise ValueError
            return float(value)
        if base == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if base == "bool":
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
            if not isinstance(value, bool):
                raise ValueError
            return value
        if base.startswith("tuple"):
            if isinstance(value, (str, dict)):
                raise ValueError
            return tuple(float(v) for v in value)
        if base == "str":
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):  # a list is not a path
                raise ValueError
            return str(value)
    except (TypeError, ValueError):
        raise TrainConfigError(f"{where}: {value!r} is not a valid {base}") from None
    return value


def _build(cls, values: dict, where: str):
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(names)
    if unknown:
        raise TrainConfigError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(names)}")
    kwargs = {}
    for key, value in values.items():
        sub = names[key].default_factory if names[key].default_factory is not dataclasses.MISSING else None
        if sub is not None and dataclasses.is_dataclass(sub):
            if not isinstance(value, dict):
                raise TrainConfigError(f"{where}.{key}: a section must be a mapping of keys, got {type(value).__name__}")
            kwargs[key] = _build(sub, value, f"{where}.{key}")
        else:
            kwargs[key] = _coerce(value, names[key].type, f"{where}.{key}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise TrainConfigError(f"{where}: {e}") from None


def load_config(path: str | None, overrides: list[str] = ()) -> TrainConfig:
    """Read the YAML file (if any) and apply ``--section.key value`` overrides."""
    raw: dict = {}
    if path:
        raw = load_yaml(path, TrainConfigError) or {}
        if not isinstance(raw, dict):
            raise TrainConfigError(f"{path}: the top level must be a mapping of sections")
    overrides = list(overrides)
    if len(overrides) % 2:
        raise TrainConfigError(f"overrides come as '--section.key value' pairs, got {overrides}")
    sections = _sections()
    for flag, value in zip(overrides[::2], overrides[1::2]):
        if not flag.startswith("--") or "." not in flag:
            raise TrainConfigError(f"command line: {flag!r} is not of the form --section.key")
        section, key = flag[2:].split(".", 1)
        if section not in sections:
            raise TrainConfigError(f"command line: {flag}: no section {section!r}; sections: {', '.join(sections)}")
        if key not in sections[section]:
            raise TrainConfigError(f"command line: {flag}: no key {key!r} in {section}; "
                                   f"keys: {', '.join(sections[section])}")
        raw.setdefault(section, {})
        if not isinstance(raw[section], dict):
            raise TrainConfigError(f"section {section!r} must be a mapping")
        raw[section][key] = yaml.safe_load(value)
    return _build(TrainConfig, raw, path or "config").validate()


def to_dict(cfg: TrainConfig) -> dict:
    return dataclasses.asdict(cfg)


def _sections() -> dict[str, dict[str, dataclasses.Field]]:
    """section name -> its fields, in declaration order."""
    return {f.name: {g.name: g for g in dataclasses.fields(f.default_factory)} for f in dataclasses.fields(TrainConfig)}


def describe() -> str:
    """Every section and key with its type, default and meaning: the trainer's --help."""
    lines = []
    for section, fields in _sections().items():
        cls = type(getattr(TrainConfig(), section))
        own = cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "(")  # not the one dataclasses invent
        doc = cls.__doc__.strip().splitlines()[0] if own else ""
        lines.append(f"{section}:" + (f"  {doc}" if doc else ""))
        for name, f in fields.items():
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            choices = f.metadata.get("choices")
            kind = " | ".join(choices) if choices else str(f.type)
            lines.append(f"  {section + '.' + name:<33} {kind:<24} {default!r:<14} {f.metadata.get('help', '')}".rstrip())
    return "\n".join(lines)

