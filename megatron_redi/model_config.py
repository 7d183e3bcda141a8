"""Model configuration, read from a Hugging Face ``config.json``.

One dataclass describes every supported decoder (Qwen2, Llama-3 and Qwen3 share the architecture:
GQA, RMSNorm, SwiGLU, RoPE; they differ in biases, q/k norms, RoPE scaling and tying). What differs
between families, and how each spells its config.json, is its record in families.py; this module
reads and writes config.json through that record. Each field is documented once, here; validation
sits in ``__post_init__`` next to the fields it checks. Parallel and training settings live
elsewhere (``parallel.ParallelState``, the trainer's config).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field

from .families import ARCHITECTURES, FAMILIES, MLP_MATRICES, Family, family_of
from .settings import ConfigError, load_json

# The former name of ``families.ARCHITECTURES`` (HF architecture -> its Family record; until the
# families' seam it mapped to the default of qkv_bias), kept for callers of the old import path.
SUPPORTED_ARCHITECTURES = ARCHITECTURES


@dataclass(frozen=True)
class RopeScaling:
    """Llama-3 ("llama3") frequency scaling of RoPE; see ``model.rope``."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int


# the config.json fields ModelConfig reads, and the JSON types each may have
_HF_FIELD_TYPES = {**{k: (int,) for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                          "num_attention_heads", "num_key_value_heads", "head_dim",
                                          "max_position_embeddings")},
                   **{k: (int, float) for k in ("rope_theta", "rms_norm_eps")},
                   **{k: (bool,) for k in ("attention_bias", "tie_word_embeddings", "use_sliding_window", "mlp_bias")},
                   "architectures": (list,), "layer_types": (list,), "model_type": (str,), "hidden_act": (str,),
                   "rope_scaling": (dict,), "rope_parameters": (dict,)}


@dataclass(frozen=True)
class ModelConfig:
    architecture: str  # an HF architecture of families.py: "Qwen2ForCausalLM", "LlamaForCausalLM", ...
    vocab_size: int  # rows of the embedding and the LM head
    hidden_size: int  # width of the residual stream, h
    intermediate_size: int  # width of the SwiGLU MLP, f
    num_layers: int
    num_heads: int  # query heads, nh
    num_kv_heads: int  # key/value heads, nkv (GQA groups); divides nh
    head_dim: int  # hd; hidden_size / num_heads unless the config says otherwise
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    max_position_embeddings: int = 32768
    qkv_bias: bool = True  # biases on the q/k/v projections (Qwen2); by default as the family says
    qk_norm: bool = False  # an RMSNorm over each query and key head before RoPE (Qwen3)
    tie_word_embeddings: bool = False  # LM head shares the embedding matrix
    # keys of the original config.json that we do not interpret, written back on export
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        if family_of(self.architecture) is None:
            raise ConfigError(f"architecture {self.architecture!r} is not supported; supported: {_supported()}")
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers",
                     "num_heads", "num_kv_heads", "head_dim"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"config field {name} must be positive, got {getattr(self, name)}")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                f"num_attention_heads ({self.num_heads}) is not a multiple of "
                f"num_key_value_heads ({self.num_kv_heads})"
            )
        if self.head_dim % 2:
            raise ConfigError(f"head_dim must be even for RoPE, got {self.head_dim}")

    @property
    def family(self) -> Family:
        return family_of(self.architecture)

    def layer_matrix_parameters(self) -> int:
        """The weight matrices of one decoder layer (QKV, output and the MLP's projections):
        what its GEMMs multiply by, so what the FLOP count of a step counts."""
        h, hd = self.hidden_size, self.head_dim
        qkv = h * (self.num_heads + 2 * self.num_kv_heads) * hd
        return qkv + self.num_heads * hd * h + MLP_MATRICES[self.family.mlp] * h * self.intermediate_size

    def num_parameters(self) -> int:
        """Parameter count (the tied head counted once)."""
        h = self.hidden_size
        bias = (self.num_heads + 2 * self.num_kv_heads) * self.head_dim if self.qkv_bias else 0
        qk_norm = 2 * self.head_dim if self.qk_norm else 0
        layer = self.layer_matrix_parameters() + bias + qk_norm + 2 * h  # + the two norms' weights
        head = 0 if self.tie_word_embeddings else self.vocab_size * h
        return self.vocab_size * h + self.num_layers * layer + h + head

    # ---- Hugging Face config.json <-> ModelConfig -------------------------------------------

    @classmethod
    def from_hf_dict(cls, cfg: dict, source: str = "config") -> ModelConfig:
        if not isinstance(cfg, dict):
            raise ConfigError(f"{source}: a JSON {type(cfg).__name__}, not an object of fields")
        for key, value in cfg.items():  # each field read below, of the type its readers expect
            want = _HF_FIELD_TYPES.get(key)
            if want and value is not None and (not isinstance(value, want) or isinstance(value, bool) != (bool in want)):
                raise ConfigError(f"{source}: field {key!r} is {value!r}; expected {' or '.join(t.__name__ for t in want)}")
        archs = cfg.get("architectures") or []
        model_type = cfg.get("model_type")
        family = family_of(archs[0]) if archs else FAMILIES.get(model_type)
        if family is None:
            what = f"architecture {archs[0]!r}" if archs else f"model_type {model_type!r}"
            raise ConfigError(f"{source}: {what} is not supported; supported: {_supported()}")

        def read(key):  # a key of the family's, as its HF config class reads it
            return family.defaults[key] if cfg.get(key) is None else cfg[key]

        for key, accepted in family.only.items():
            if read(key) != accepted:
                raise ConfigError(f"{source}: {key}={json.dumps(cfg[key])} is not supported for "
                                  f"{family.name} ({json.dumps(accepted)} only)")
        other_layers = sorted(set(cfg.get("layer_types") or []) - {"full_attention"})
        if other_layers:  # transformers >= 5 names each layer's attention; sliding windows are not built
            raise ConfigError(f"{source}: layer_types has {', '.join(map(str, other_layers))}; only full_attention "
                              "layers are supported")
        for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"):
            if cfg.get(key) is None:
                raise ConfigError(f"{source}: required field {key!r} is missing" + (" (null)" if key in cfg else ""))
        hidden, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
        kwargs = dict(
            architecture=archs[0] if archs else family.architectures[0],
            vocab_size=int(cfg["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(cfg["intermediate_size"]),
            num_layers=int(cfg["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
        )
        kwargs["head_dim"] = int(read("head_dim") or hidden // heads)
        # transformers >= 5 nests theta and scaling in rope_parameters; older files keep
        # rope_theta and rope_scaling at the top level.
        rope = dict(cfg.get("rope_parameters") or {})
        rope.update(cfg.get("rope_scaling") or {})
        theta = next((t for t in (cfg.get("rope_theta"), rope.get("rope_theta")) if t is not None),
                     family.defaults["rope_theta"])
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type not in family.rope_types:
            raise ConfigError(f"{source}: rope type {rope_type!r} is not supported for {family.name} "
                              f"({', '.join(family.rope_types)})")
        if rope_type == "llama3":
            kwargs["rope_scaling"] = RopeScaling(
                factor=float(rope["factor"]),
                low_freq_factor=float(rope["low_freq_factor"]),
                high_freq_factor=float(rope["high_freq_factor"]),
                original_max_position_embeddings=int(rope["original_max_position_embeddings"]),
            )
        kwargs.update(
            rope_theta=float(theta),
            rms_norm_eps=float(read("rms_norm_eps")),
            max_position_embeddings=int(read("max_position_embeddings")),
            qkv_bias=family.qkv_bias,
            qk_norm=family.qk_norm,
            tie_word_embeddings=bool(read("tie_word_embeddings")),
            extra={k: v for k, v in cfg.items() if k in _PASSTHROUGH_KEYS},
        )
        return cls(**kwargs)

    @classmethod
    def from_hf(cls, path: str) -> ModelConfig:
        """Read ``config.json`` from a checkpoint directory (or the file itself)."""
        file = os.path.join(path, "config.json") if os.path.isdir(path) else path
        return cls.from_hf_dict(load_json(file, ConfigError), source=file)

    def to_hf_dict(self) -> dict:
        """The config.json of an HF checkpoint with these weights."""
        family = self.family
        rope = {"rope_type": "default", "rope_theta": self.rope_theta}
        if self.rope_scaling is not None:
            rope = {"rope_type": "llama3", "rope_theta": self.rope_theta,
                    **dataclasses.asdict(self.rope_scaling)}
        cfg = dict(self.extra)
        cfg.update(family.only)  # the values of the keys the family could set otherwise
        cfg.update(
            architectures=[self.architecture],
            model_type=family.name,
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_kv_heads,
            head_dim=self.head_dim,
            hidden_act="silu",
            rms_norm_eps=self.rms_norm_eps,
            max_position_embeddings=self.max_position_embeddings,
            tie_word_embeddings=self.tie_word_embeddings,
            rope_theta=self.rope_theta,
            rope_scaling=None if self.rope_scaling is None else rope,
            rope_parameters=rope,
        )
        return cfg


def _supported() -> str:
    return ", ".join(ARCHITECTURES)


# Keys kept verbatim on a round trip because inference engines read them.
_PASSTHROUGH_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id", "torch_dtype", "dtype",
                     "initializer_range", "use_cache", "attention_dropout", "max_window_layers",
                     "sliding_window", "use_sliding_window")


# Shapes of the models users train, as HF config dicts (weights are never downloaded here; the
# benchmark and the converter's memory test build random checkpoints of these shapes).
_QWEN2 = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "rms_norm_eps": 1e-6}
_QWEN3 = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "rms_norm_eps": 1e-6, "head_dim": 128,
          "vocab_size": 151936, "rope_theta": 1e6, "max_position_embeddings": 32768}
PRESETS = {
    # the demo's student, over the synthetic corpus's 512-token vocabulary
    "tiny": {**_QWEN2, "hidden_size": 96, "intermediate_size": 256, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512, "tie_word_embeddings": True,
             "rope_theta": 10000.0, "max_position_embeddings": 1024, "bos_token_id": 0, "eos_token_id": 0},
    "qwen2.5-0.5b": {**_QWEN2, "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
                     "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936,
                     "tie_word_embeddings": True, "rope_theta": 1e6, "max_position_embeddings": 32768},
    "qwen2.5-1.5b": {**_QWEN2, "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
                     "num_attention_heads": 12, "num_key_value_heads": 2, "vocab_size": 151936,
                     "tie_word_embeddings": True, "rope_theta": 10000.0, "max_position_embeddings": 4096},
    "qwen2.5-7b": {**_QWEN2, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                   "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
                   "tie_word_embeddings": False, "rope_theta": 1e6, "max_position_embeddings": 32768},
    # Qwen3 base models (their config.json: head_dim 128 on its own, q/k norms, no QKV bias)
    "qwen3-1.7b": {**_QWEN3, "hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": 28,
                   "num_attention_heads": 16, "num_key_value_heads": 8, "tie_word_embeddings": True},
    "qwen3-4b": {**_QWEN3, "hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 36,
                 "num_attention_heads": 32, "num_key_value_heads": 8, "tie_word_embeddings": True},
    "qwen3-8b": {**_QWEN3, "hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 36,
                 "num_attention_heads": 32, "num_key_value_heads": 8, "tie_word_embeddings": False},
    "llama-3.2-3b": {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 3072,
                     "intermediate_size": 8192, "num_hidden_layers": 28, "num_attention_heads": 24,
                     "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 128256,
                     "tie_word_embeddings": True, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
                     "max_position_embeddings": 131072,
                     "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}},
}


def preset(name: str, **overrides) -> ModelConfig:
    """A preset's ModelConfig, with HF config fields overridden (e.g. num_hidden_layers=2)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return ModelConfig.from_hf_dict({**PRESETS[name], **overrides}, source=f"preset {name}")
