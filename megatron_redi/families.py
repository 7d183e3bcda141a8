"""Model families: one record per family of dense decoders, the only place a family is described.

Every supported family is the same pre-norm decoder (GQA attention with RoPE, RMSNorm, a gated MLP)
and differs in a few parts of the block and in how its ``config.json`` is spelled. A ``Family``
says both; everything that depends on the family reads it from here:

    model_config.py          which config.json keys are read and their defaults; the family's
                             refusals; config.json written back on export
    model/decoder.py         the block's parts (QKV bias, q/k norm)
    checkpoint/hf_mapping.py the HF tensors of the block (the name table and shapes)
    model/memory.py          what the q/k norm keeps for the backward
    ModelConfig counts       parameters and the FLOP count's weight matrices (the MLP kind)

docs/design.md ("Adding a model family") lists the steps that add one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The MLP kinds the decoder has, and how many [h, f] weight matrices each multiplies by.
MLP_MATRICES = {"swiglu": 3}  # gate, up, down: silu(x W_gate) * (x W_up) W_down


@dataclass(frozen=True)
class Family:
    name: str  # the HF ``model_type``
    architectures: tuple[str, ...]  # the HF class names config.json's ``architectures`` may give
    qkv_bias: bool  # biases on the q, k and v projections (see ``defaults``' attention_bias)
    qk_norm: bool  # an RMSNorm over each query and key head (head_dim wide, weights of its own) before RoPE
    mlp: str = "swiglu"  # a key of MLP_MATRICES
    rope_types: tuple[str, ...] = ("default", "llama3")  # what model/rope.py computes
    # The optional config.json keys the family reads, with the value its HF config class takes when a
    # key is absent (head_dim None: hidden_size / num_attention_heads). Keys not listed are not read.
    defaults: dict = field(default_factory=dict)
    # Keys whose values the family's HF class supports but this library does not, with the one value
    # it accepts (the refusal names the key).
    only: dict = field(default_factory=dict)

    def __post_init__(self):
        assert self.mlp in MLP_MATRICES, self.mlp


_COMMON = {"rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": False, "head_dim": None,
           "hidden_act": "silu"}
_SILU = {"hidden_act": "silu"}  # the MLP's activation, fixed by the MLP kind

FAMILIES = {f.name: f for f in (
    # Qwen2 / Qwen2.5 (-Math): biases on q, k, v, always (its config class has no attention_bias)
    Family("qwen2", ("Qwen2ForCausalLM",), qkv_bias=True, qk_norm=False,
           defaults={**_COMMON, "max_position_embeddings": 32768, "use_sliding_window": False},
           only={**_SILU, "use_sliding_window": False}),
    # Llama-3 (3.1, 3.2): no biases; attention_bias would add them to q, k, v and o
    Family("llama", ("LlamaForCausalLM",), qkv_bias=False, qk_norm=False,
           defaults={**_COMMON, "max_position_embeddings": 2048, "attention_bias": False, "mlp_bias": False},
           only={**_SILU, "attention_bias": False, "mlp_bias": False}),
    # Qwen3 dense: no biases, an RMSNorm on each query and key head, head_dim set on its own
    Family("qwen3", ("Qwen3ForCausalLM",), qkv_bias=False, qk_norm=True,
           defaults={**_COMMON, "head_dim": 128, "max_position_embeddings": 32768, "attention_bias": False,
                     "use_sliding_window": False},
           only={**_SILU, "attention_bias": False, "use_sliding_window": False}),
)}

ARCHITECTURES = {arch: family for family in FAMILIES.values() for arch in family.architectures}


def family_of(architecture: str) -> Family | None:
    return ARCHITECTURES.get(architecture)
