"""Model configuration, read from a Hugging Face ``config.json``.

One dataclass describes every supported decoder (Qwen2 and Llama-3 share the architecture:
GQA, RMSNorm, SwiGLU, RoPE; they differ in biases, RoPE scaling and tying). Each field is
documented once, here; validation sits in ``__post_init__`` next to the fields it checks.
Parallel and training settings live elsewhere (``parallel.ParallelState``, the trainer's config).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

from .settings import ConfigError, load_json

SUPPORTED_ARCHITECTURES = {"Qwen2ForCausalLM": True, "LlamaForCausalLM": False}


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
                   "architectures": (list,), "model_type": (str,), "hidden_act": (str,),
                   "rope_scaling": (dict,), "rope_parameters": (dict,)}


@dataclass(frozen=True)
class ModelConfig:
    architecture: str  # "Qwen2ForCausalLM" or "LlamaForCausalLM"
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
    qkv_bias: bool = True  # Qwen2: biases on q/k/v projections; Llama: none
    tie_word_embeddings: bool = False  # LM head shares the embedding matrix
    # keys of the original config.json that we do not interpret, written back on export
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        if self.architecture not in SUPPORTED_ARCHITECTURES:
            raise ConfigError(
                f"architecture {self.architecture!r} is not supported; "
                f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
            )
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

    def layer_matrix_parameters(self) -> int:
        """The weight matrices of one decoder layer (QKV, output, gate/up and down projections):
        what its GEMMs multiply by, so what the FLOP count of a step counts."""
        h, hd = self.hidden_size, self.head_dim
        qkv = h * (self.num_heads + 2 * self.num_kv_heads) * hd
        return qkv + self.num_heads * hd * h + 3 * h * self.intermediate_size

    def num_parameters(self) -> int:
        """Parameter count (the tied head counted once)."""
        h = self.hidden_size
        bias = (self.num_heads + 2 * self.num_kv_heads) * self.head_dim if self.qkv_bias else 0
        layer = self.layer_matrix_parameters() + bias + 2 * h  # + the two norms' weights
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
        arch = archs[0] if archs else {"qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM"}.get(model_type)
        if arch is None:
            raise ConfigError(f"{source}: cannot tell the architecture (architectures={archs}, "
                              f"model_type={model_type!r})")
        if arch not in SUPPORTED_ARCHITECTURES:
            raise ConfigError(f"{source}: architecture {arch!r} is not supported; "
                              f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}")
        try:
            hidden, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
            kwargs = dict(
                architecture=arch,
                vocab_size=int(cfg["vocab_size"]),
                hidden_size=hidden,
                intermediate_size=int(cfg["intermediate_size"]),
                num_layers=int(cfg["num_hidden_layers"]),
                num_heads=heads,
                num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
            )
        except KeyError as e:
            raise ConfigError(f"{source}: required field {e.args[0]!r} is missing") from None
        kwargs["head_dim"] = int(cfg.get("head_dim") or hidden // heads)
        if cfg.get("hidden_act", "silu") != "silu":
            raise ConfigError(f"{source}: hidden_act {cfg['hidden_act']!r} is not supported (silu only)")
        if cfg.get("use_sliding_window"):
            raise ConfigError(f"{source}: use_sliding_window=true is not supported")
        if cfg.get("mlp_bias"):
            raise ConfigError(f"{source}: mlp_bias=true is not supported")
        # transformers >= 5 nests theta and scaling in rope_parameters; older files keep
        # rope_theta and rope_scaling at the top level.
        rope = dict(cfg.get("rope_parameters") or {})
        rope.update(cfg.get("rope_scaling") or {})
        theta = cfg.get("rope_theta", rope.get("rope_theta", 10000.0))
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type == "llama3":
            kwargs["rope_scaling"] = RopeScaling(
                factor=float(rope["factor"]),
                low_freq_factor=float(rope["low_freq_factor"]),
                high_freq_factor=float(rope["high_freq_factor"]),
                original_max_position_embeddings=int(rope["original_max_position_embeddings"]),
            )
        elif rope_type != "default":
            raise ConfigError(f"{source}: rope type {rope_type!r} is not supported (default, llama3)")
        kwargs.update(
            rope_theta=float(theta),
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            max_position_embeddings=int(cfg.get("max_position_embeddings", 32768)),
            qkv_bias=bool(cfg.get("attention_bias", SUPPORTED_ARCHITECTURES[arch])),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
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
        model_type = "qwen2" if self.architecture == "Qwen2ForCausalLM" else "llama"
        rope = {"rope_type": "default", "rope_theta": self.rope_theta}
        if self.rope_scaling is not None:
            rope = {"rope_type": "llama3", "rope_theta": self.rope_theta,
                    **dataclasses.asdict(self.rope_scaling)}
        cfg = dict(self.extra)
        cfg.update(
            architectures=[self.architecture],
            model_type=model_type,
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
        if model_type == "llama":
            cfg.update(attention_bias=self.qkv_bias, mlp_bias=False)
        return cfg


# Keys kept verbatim on a round trip because inference engines read them.
_PASSTHROUGH_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id", "torch_dtype", "dtype",
                     "initializer_range", "use_cache", "attention_dropout", "max_window_layers",
                     "sliding_window", "use_sliding_window")


# Shapes of the models users train, as HF config dicts (weights are never downloaded here; the
# benchmark and the converter's memory test build random checkpoints of these shapes).
_QWEN2 = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "rms_norm_eps": 1e-6}
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
