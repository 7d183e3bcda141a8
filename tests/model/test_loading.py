"""Bad checkpoints and configs fail before any weight is read, naming the field or tensor."""

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from megatron_redi.checkpoint import CheckpointError
from megatron_redi.model_config import ModelConfig
from megatron_redi.settings import ConfigError
from megatron_redi.model import from_pretrained
from megatron_redi.parallel import ParallelState


def _copy(src, dst):
    shutil.copytree(src, dst)
    return str(dst)


def _edit_tensors(path, edit):
    file = os.path.join(path, "model.safetensors")
    tensors = load_file(file)
    edit(tensors)
    save_file(tensors, file, metadata={"format": "pt"})


def _edit_config(path, edit):
    file = os.path.join(path, "config.json")
    with open(file) as f:
        cfg = json.load(f)
    edit(cfg)
    with open(file, "w") as f:
        json.dump(cfg, f)


def test_missing_tensor_is_named(tiny_checkpoint, tmp_path):
    path = _copy(tiny_checkpoint(), tmp_path / "ck")
    _edit_tensors(path, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(CheckpointError, match=r"missing tensor\(s\) model.layers.1.mlp.up_proj.weight"):
        from_pretrained(path)


def test_wrong_shape_is_named(tiny_checkpoint, tmp_path):
    path = _copy(tiny_checkpoint(), tmp_path / "ck")
    _edit_tensors(path, lambda t: t.update({"model.layers.0.self_attn.k_proj.weight": torch.zeros(8, 64)}))
    with pytest.raises(CheckpointError, match=r"model.layers.0.self_attn.k_proj.weight has shape \[8, 64\]"):
        from_pretrained(path)


def test_unexpected_tensor_is_named(tiny_checkpoint, tmp_path):
    path = _copy(tiny_checkpoint(tie_word_embeddings=False), tmp_path / "ck")
    _edit_tensors(path, lambda t: t.update({"model.layers.0.mlp.extra.weight": torch.zeros(2)}))
    with pytest.raises(CheckpointError, match="unexpected tensor.*mlp.extra.weight"):
        from_pretrained(path)


@pytest.mark.parametrize("arch", ["MistralForCausalLM", "Qwen3MoeForCausalLM"])
def test_unsupported_architecture(tiny_checkpoint, tmp_path, arch):
    path = _copy(tiny_checkpoint(), tmp_path / "ck")
    _edit_config(path, lambda c: c.update(architectures=[arch]))
    with pytest.raises(ConfigError, match=f"{arch}.*not supported"):
        from_pretrained(path)


def test_missing_config_field(tiny_checkpoint, tmp_path):
    path = _copy(tiny_checkpoint(), tmp_path / "ck")
    _edit_config(path, lambda c: c.pop("intermediate_size"))
    with pytest.raises(ConfigError, match="'intermediate_size' is missing"):
        from_pretrained(path)


def test_tp_that_does_not_divide_heads(tiny_checkpoint):
    # 4 query heads: TP 3 cannot split them (checked before any group is used)
    state = ParallelState(world_size=3, tp_size=3, tp_rank=0)
    with pytest.raises(ValueError, match=r"TP size 3 does not divide num_attention_heads \(4\)"):
        from_pretrained(tiny_checkpoint(), state)


def test_sharded_checkpoint_loads_like_single_file(tiny_checkpoint, tmp_path):
    from transformers import AutoModelForCausalLM

    single = tiny_checkpoint()
    sharded = str(tmp_path / "sharded")
    AutoModelForCausalLM.from_pretrained(single).save_pretrained(sharded, max_shard_size="40KB")
    assert os.path.exists(os.path.join(sharded, "model.safetensors.index.json"))
    a, b = from_pretrained(single), from_pretrained(sharded)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name


def test_config_round_trip_keeps_rope_and_tying(tiny_checkpoint):
    cfg = ModelConfig.from_hf(tiny_checkpoint(arch="llama3", tie_word_embeddings=False))
    assert cfg.rope_scaling is not None and cfg.rope_scaling.factor == 8.0 and cfg.rope_theta == 500000.0
    assert not cfg.qkv_bias and not cfg.tie_word_embeddings
    assert ModelConfig.from_hf_dict(cfg.to_hf_dict()) == cfg
    # the pre-transformers-5 spelling: rope_theta and rope_scaling at the top level
    old = {k: v for k, v in cfg.to_hf_dict().items() if k != "rope_parameters"}
    assert ModelConfig.from_hf_dict(old) == cfg


def test_parameter_count_matches_transformers(tiny_checkpoint):
    from transformers import AutoModelForCausalLM

    for tie in (True, False):
        path = tiny_checkpoint(tie_word_embeddings=tie)
        hf = AutoModelForCausalLM.from_pretrained(path)
        assert ModelConfig.from_hf(path).num_parameters() == sum(p.numel() for p in hf.parameters())
        assert from_pretrained(path).cfg.num_parameters() == sum(p.numel() for p in from_pretrained(path).parameters())


@pytest.mark.parametrize("change,message", [
    ({"attention_bias": True}, "attention_bias=true is not supported for qwen3 \\(false only\\)"),
    ({"use_sliding_window": True}, "use_sliding_window=true is not supported for qwen3"),
    ({"layer_types": ["full_attention", "sliding_attention"]}, "layer_types has sliding_attention"),
    ({"hidden_act": "gelu"}, 'hidden_act="gelu" is not supported for qwen3 \\("silu" only\\)'),
    ({"head_dim": 25}, "head_dim must be even"),
    ({"rope_parameters": {"rope_type": "yarn", "factor": 4.0}}, "rope type 'yarn' is not supported for qwen3"),
])
def test_what_a_family_does_not_support_is_refused_by_name(change, message):
    from megatron_redi.model_config import PRESETS

    with pytest.raises(ConfigError, match=message):
        ModelConfig.from_hf_dict({**PRESETS["qwen3-4b"], **change})


@pytest.mark.parametrize("tp,change,message", [
    (3, {}, r"TP size 3 does not divide num_attention_heads \(32\)"),
    (64, {}, r"TP size 64 does not divide num_attention_heads \(32\)"),
    (2, {"vocab_size": 151937}, r"TP size 2 does not divide vocab_size \(151937\)"),
    (2, {"intermediate_size": 9727}, r"TP size 2 does not divide intermediate_size \(9727\)"),
])
def test_qwen3_shapes_that_do_not_split_over_tp_are_refused_by_name(tp, change, message):
    from megatron_redi.model_config import preset
    from megatron_redi.parallel import TPLayout

    with pytest.raises(ValueError, match=message):
        TPLayout(preset("qwen3-4b", **change), tp)
    assert TPLayout(preset("qwen3-4b"), 8).heads_local == 4  # 32 heads of 128, hidden 2560: any TP dividing them


def test_family_defaults_are_those_of_its_transformers_config():
    """A config.json without the optional keys means what transformers' class of the family makes of it."""
    from transformers import AutoConfig

    from megatron_redi.families import FAMILIES

    for family in FAMILIES.values():
        bare = {"architectures": [family.architectures[0]], "model_type": family.name, "vocab_size": 64,
                "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 1, "num_attention_heads": 4}
        ours = ModelConfig.from_hf_dict(bare)
        theirs = AutoConfig.for_model(family.name, **{k: v for k, v in bare.items() if k != "model_type"})
        assert ours.head_dim == (getattr(theirs, "head_dim", None) or 64 // 4), family.name
        assert ours.rms_norm_eps == theirs.rms_norm_eps and ours.max_position_embeddings == theirs.max_position_embeddings
        assert ours.tie_word_embeddings == theirs.tie_word_embeddings
        assert ours.qkv_bias == getattr(theirs, "attention_bias", True), family.name


def test_the_decoder_s_former_name_still_imports():
    from megatron_redi.model import Decoder, Qwen2Model
    from megatron_redi.model.qwen2 import Qwen2Model as from_its_old_module

    assert Qwen2Model is Decoder and from_its_old_module is Decoder


def test_a_sharded_model_in_the_hugging_face_cache_layout(tiny_checkpoint, tmp_path):
    """snapshot_download's layout: the snapshot's files are links into the model's blobs/. Accepted
    (transformers loads it); a link leaving the model's tree is still refused."""
    import hashlib

    from transformers import AutoModelForCausalLM

    sharded = tmp_path / "sharded"
    AutoModelForCausalLM.from_pretrained(tiny_checkpoint()).save_pretrained(sharded, max_shard_size="40KB")
    repo = tmp_path / "hub" / "models--org--tiny"
    snapshot = repo / "snapshots" / "0123abc"
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for file in sharded.iterdir():
        blob = repo / "blobs" / hashlib.sha256(file.read_bytes()).hexdigest()
        shutil.copy(file, blob)
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    a, b = from_pretrained(str(sharded)), from_pretrained(str(snapshot))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    outside = tmp_path / "elsewhere.safetensors"
    index = json.loads((snapshot / "model.safetensors.index.json").read_text())
    first = sorted(set(index["weight_map"].values()))[0]
    shutil.copy(snapshot / first, outside)
    (snapshot / first).unlink()
    (snapshot / first).symlink_to(outside)
    with pytest.raises(CheckpointError, match="not a file inside the checkpoint"):
        from_pretrained(str(snapshot))
