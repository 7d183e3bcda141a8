"""tools/convert_checkpoint.py: round trips, resharding, HF loading, and refusal of bad input."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from megatron_redi.checkpoint import native
from megatron_redi.checkpoint.convert import main
from megatron_redi.checkpoint.hf_mapping import HFCheckpointReader
from megatron_redi.model import from_pretrained
from megatron_redi.model_config import ModelConfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def convert(*args):
    return main([*map(str, args), "--no-progress"])


def _hf_tensors(path):
    reader = HFCheckpointReader(str(path))
    return {name: reader.read(name) for name in reader.names()}


@pytest.fixture
def hf_bf16(tiny_checkpoint, tiny_tokenizer_dir, tmp_path):
    """A bf16 HF checkpoint with a tokenizer, copied so tests may modify it."""
    def build(**kwargs):
        src = tiny_checkpoint(dtype=torch.bfloat16, **kwargs)
        dst = tmp_path / "hf_in"
        shutil.copytree(src, dst)
        for f in os.listdir(tiny_tokenizer_dir):
            shutil.copy(os.path.join(tiny_tokenizer_dir, f), dst)
        return dst
    return build


@pytest.mark.parametrize("arch,tie,kv", [("qwen2", True, 2), ("qwen2", False, 1), ("llama3", False, 2),
                                         ("qwen3", True, 2), ("qwen3", False, 1)])
def test_round_trip_is_bit_exact(hf_bf16, tmp_path, arch, tie, kv):
    src = hf_bf16(arch=arch, tie_word_embeddings=tie, num_kv_heads=kv)
    assert convert("hf-to-native", "--input", src, "--output", tmp_path / "n2", "--tp", 2) == 0
    assert convert("native-to-native", "--input", tmp_path / "n2", "--output", tmp_path / "n4", "--tp", 4) == 0
    assert convert("native-to-native", "--input", tmp_path / "n4", "--output", tmp_path / "n1", "--tp", 1) == 0
    assert convert("native-to-hf", "--input", tmp_path / "n1", "--output", tmp_path / "out") == 0
    before, after = _hf_tensors(src), _hf_tensors(tmp_path / "out")
    assert before.keys() == after.keys()
    assert ("lm_head.weight" in after) == (not tie)
    for name in before:
        assert before[name].dtype == after[name].dtype == torch.bfloat16
        assert torch.equal(before[name], after[name]), name
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert ModelConfig.from_hf_dict(config) == ModelConfig.from_hf(str(src))


@pytest.mark.parametrize("tp", [1, 2, 4])
def test_qwen3_both_ways_at_each_tp_is_bit_exact(hf_bf16, tmp_path, tp):
    """HF -> native at TP tp (4: each KV head, with its k norm, on two ranks) -> HF gives back every
    tensor, and native -> HF -> native every shard."""
    src = hf_bf16(arch="qwen3", tie_word_embeddings=False, num_kv_heads=2)
    assert convert("hf-to-native", "--input", src, "--output", tmp_path / "n", "--tp", tp) == 0
    assert convert("native-to-hf", "--input", tmp_path / "n", "--output", tmp_path / "hf") == 0
    assert convert("hf-to-native", "--input", tmp_path / "hf", "--output", tmp_path / "n_again", "--tp", tp) == 0
    before, after = _hf_tensors(src), _hf_tensors(tmp_path / "hf")
    assert before.keys() == after.keys() and any("q_norm" in name for name in after)
    assert all(torch.equal(before[name], after[name]) for name in before)
    shards = sorted(os.listdir(tmp_path / "n" / "model"))
    assert len(shards) == tp and shards == sorted(os.listdir(tmp_path / "n_again" / "model"))
    for f in shards:
        a, b = load_file(tmp_path / "n" / "model" / f), load_file(tmp_path / "n_again" / "model" / f)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f


def test_output_loads_with_transformers(hf_bf16, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = hf_bf16(tie_word_embeddings=True)
    convert("hf-to-native", "--input", src, "--output", tmp_path / "n", "--tp", 2)
    assert convert("native-to-hf", "--input", tmp_path / "n", "--output", tmp_path / "out",
                   "--dtype", "fp32", "--max-shard-size", "60KB") == 0
    files = os.listdir(tmp_path / "out")
    assert "model.safetensors.index.json" in files and "tokenizer.json" in files
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    reference = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    assert model.dtype == torch.float32
    for (name, a), b in zip(model.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(a, b), name
    tok = AutoTokenizer.from_pretrained(tmp_path / "out")
    assert tok.apply_chat_template([{"role": "user", "content": "1+1"}], tokenize=False).startswith("<|im_start|>system")


def test_native_checkpoint_loads_into_the_model_at_any_tp(tiny_checkpoint, tmp_path):
    src = tiny_checkpoint()
    convert("hf-to-native", "--input", src, "--output", tmp_path / "n", "--tp", 2)
    ids, pos = torch.arange(20) % 384, torch.cat([torch.arange(12), torch.arange(8)])
    with torch.no_grad():  # TP=1 from a TP=2 native checkpoint (resharded on load) equals HF
        a = from_pretrained(src)(ids, pos, [0, 12, 20], return_logits=True)
        b = from_pretrained(str(tmp_path / "n"))(ids, pos, [0, 12, 20], return_logits=True)
    assert torch.equal(a, b)


def test_metadata_records_format_and_refuses_unknown_version(tiny_checkpoint, tmp_path):
    convert("hf-to-native", "--input", tiny_checkpoint(), "--output", tmp_path / "n", "--tp", 2)
    meta_file = tmp_path / "n" / native.METADATA_FILE
    meta = json.loads(meta_file.read_text())
    assert (meta["format"], meta["format_version"], meta["tp_size"], meta["dtype"]) == ("megatron_redi", 1, 2, "F32")
    meta["format_version"] = 2
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(native.CheckpointError, match="format_version 2 is not supported"):
        native.NativeCheckpointReader(str(tmp_path / "n"))


def _remove(name):
    return lambda t: t.pop(name)


@pytest.mark.parametrize("edit,message", [
    (_remove("model.layers.0.self_attn.v_proj.weight"), "missing tensor.*v_proj.weight"),
    (lambda t: t.update({"model.extra.weight": torch.zeros(3)}), "unexpected tensor.*model.extra.weight"),
    (lambda t: t.update({"model.norm.weight": torch.zeros(63)}), r"model.norm.weight has shape \[63\]"),
])
def test_bad_hf_input_exits_2_naming_the_tensor(tiny_checkpoint, tmp_path, capsys, edit, message):
    src = tmp_path / "bad"
    shutil.copytree(tiny_checkpoint(), src)
    tensors = load_file(src / "model.safetensors")
    edit(tensors)
    save_file(tensors, src / "model.safetensors")
    assert convert("hf-to-native", "--input", src, "--output", tmp_path / "out", "--tp", 2) == 2
    assert __import__("re").search(message, capsys.readouterr().err)
    assert not os.path.exists(tmp_path / "out")


@pytest.mark.parametrize("tp,message", [(3, r"TP size 3 does not divide num_attention_heads \(4\)"),
                                        (8, r"TP size 8 does not divide num_attention_heads")])
def test_tp_that_does_not_divide_exits_2(tiny_checkpoint, tmp_path, capsys, tp, message):
    assert convert("hf-to-native", "--input", tiny_checkpoint(), "--output", tmp_path / "o", "--tp", tp) == 2
    assert __import__("re").search(message, capsys.readouterr().err)


def test_vocab_not_divisible_exits_2(tiny_checkpoint, tmp_path, capsys):
    src = tiny_checkpoint(vocab_size=390, num_heads=4, num_kv_heads=4)  # 390 = 2 * 195, not 4 * n
    assert convert("hf-to-native", "--input", src, "--output", tmp_path / "o", "--tp", 4) == 2
    assert "does not divide vocab_size (390)" in capsys.readouterr().err


def test_existing_output_needs_overwrite(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    assert convert("hf-to-native", "--input", tiny_checkpoint(), "--output", out, "--tp", 1) == 2
    assert "not empty" in capsys.readouterr().err and (out / "keep.txt").exists()
    assert convert("hf-to-native", "--input", tiny_checkpoint(), "--output", out, "--tp", 1, "--overwrite") == 0
    assert not (out / "keep.txt").exists() and (out / native.METADATA_FILE).exists()


def test_dry_run_writes_nothing(tiny_checkpoint, tmp_path):
    assert convert("hf-to-native", "--input", tiny_checkpoint(), "--output", tmp_path / "o", "--tp", 2, "--dry-run") == 0
    assert not os.path.exists(tmp_path / "o")


def test_interrupted_conversion_leaves_no_output(tiny_checkpoint, tmp_path, monkeypatch):
    calls = {"n": 0}
    real_write = native.StreamingWriter.write

    def failing_write(self, name, tensor):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # as if killed half-way
        return real_write(self, name, tensor)

    monkeypatch.setattr(native.StreamingWriter, "write", failing_write)
    with pytest.raises(KeyboardInterrupt):
        convert("hf-to-native", "--input", tiny_checkpoint(), "--output", tmp_path / "o", "--tp", 2)
    assert os.listdir(tmp_path) == []  # neither the output nor its temporary sibling


def test_drifted_kv_replicas_are_refused(tiny_checkpoint, tmp_path, capsys):
    convert("hf-to-native", "--input", tiny_checkpoint(num_kv_heads=1), "--output", tmp_path / "n", "--tp", 2)
    shard = tmp_path / "n" / "model" / "tp_rank_01.safetensors"
    tensors = load_file(shard)
    tensors["layers.0.attn.qkv.weight"][-1] += 1.0  # rank 1's copy of the shared V head drifts
    save_file(tensors, shard)
    assert convert("native-to-hf", "--input", tmp_path / "n", "--output", tmp_path / "o") == 2
    assert "replicated KV head rows" in capsys.readouterr().err


def test_truncated_native_file_is_named(tiny_checkpoint, tmp_path, capsys):
    convert("hf-to-native", "--input", tiny_checkpoint(), "--output", tmp_path / "n", "--tp", 2)
    shard = tmp_path / "n" / "model" / "tp_rank_00.safetensors"
    with open(shard, "r+b") as f:
        f.truncate(os.path.getsize(shard) // 2)
    assert convert("native-to-hf", "--input", tmp_path / "n", "--output", tmp_path / "o") == 2
    assert "tp_rank_00.safetensors: truncated" in capsys.readouterr().err


def test_command_line_exit_code(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "convert_checkpoint.py"),
                           "native-to-hf", "--input", str(tmp_path), "--output", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "needs a native checkpoint" in proc.stderr


@pytest.mark.parametrize("where", ["same", "inside", "above"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_an_output_overlapping_the_input_is_refused(tiny_checkpoint, tmp_path, capsys, where, overwrite):
    run = tmp_path / "run"
    convert("hf-to-native", "--input", tiny_checkpoint(), "--output", run / "ckpt", "--tp", 2)
    before = sorted(p for p in run.rglob("*"))
    output = {"same": run / "ckpt", "inside": run / "ckpt" / "hf", "above": run}[where]
    args = ["native-to-native", "--input", run / "ckpt", "--output", output, "--tp", 1]
    assert convert(*args, *(["--overwrite"] if overwrite else [])) == 2
    assert "refused, it would overwrite" in capsys.readouterr().err
    assert sorted(p for p in run.rglob("*")) == before
    native.NativeCheckpointReader(str(run / "ckpt"))  # still whole


def test_a_full_disk_exits_2_and_leaves_no_temporary(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    def full(self, name, tensor):
        raise OSError(28, "No space left on device", str(tmp_path / "o"))

    monkeypatch.setattr(native.StreamingWriter, "write", full)
    assert convert("hf-to-native", "--input", tiny_checkpoint(), "--output", tmp_path / "o", "--tp", 2) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_stale_temporaries_of_an_interrupted_conversion_are_removed(tiny_checkpoint, tmp_path):
    stale = tmp_path / ".o.tmp-999999999"  # a writer that no longer runs
    (stale / "model").mkdir(parents=True)
    assert convert("hf-to-native", "--input", tiny_checkpoint(), "--output", tmp_path / "o", "--tp", 1) == 0
    assert sorted(os.listdir(tmp_path)) == ["o"]


@pytest.mark.parametrize("edit,message", [
    (lambda m: m.pop("model_config"), "model_config is missing"),
    (lambda m: m.update(tp_size=0), "tp_size 0 is not a positive integer"),
    (lambda m: m.update(tp_size=-2), "tp_size -2 is not a positive integer"),
])
def test_bad_native_metadata_exits_2_naming_the_field(tiny_checkpoint, tmp_path, capsys, edit, message):
    convert("hf-to-native", "--input", tiny_checkpoint(), "--output", tmp_path / "n", "--tp", 2)
    meta_file = tmp_path / "n" / native.METADATA_FILE
    meta = json.loads(meta_file.read_text())
    edit(meta)
    meta_file.write_text(json.dumps(meta))
    assert convert("native-to-hf", "--input", tmp_path / "n", "--output", tmp_path / "o") == 2
    assert message in capsys.readouterr().err


def test_index_entries_outside_the_checkpoint_are_refused(tiny_checkpoint, tmp_path, capsys):
    src = tmp_path / "hf"
    shutil.copytree(tiny_checkpoint(), src)
    names = list(load_file(src / "model.safetensors"))
    (src / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {n: ("../elsewhere.safetensors" if i == 0 else "model.safetensors") for i, n in enumerate(names)}}))
    assert convert("hf-to-native", "--input", src, "--output", tmp_path / "o", "--tp", 1, "--dry-run") == 2
    assert "not a file inside the checkpoint" in capsys.readouterr().err
