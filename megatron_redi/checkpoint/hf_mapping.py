"""Hugging Face <-> native parameter mapping: one name table plus a short list of tensor surgeries.

The table pairs each native parameter (``model.Decoder.state_dict()`` names, per TP rank) with the HF
tensors it is built from and the surgery that builds the rank's shard:

    native                          HF (model.layers.{i}. prefix where "layer")      surgery
    embed.weight                    model.embed_tokens.weight                         vocab_rows
    layers.{i}.attn_norm.weight     input_layernorm.weight                            replicate
    layers.{i}.attn.qkv.weight      self_attn.{q,k,v}_proj.weight                     qkv
    layers.{i}.attn.qkv.bias        self_attn.{q,k,v}_proj.bias  (when qkv_bias)      qkv
    layers.{i}.attn.q_norm.weight   self_attn.q_norm.weight  (when qk_norm)           replicate
    layers.{i}.attn.k_norm.weight   self_attn.k_norm.weight  (when qk_norm)           replicate
    layers.{i}.attn.out.weight      self_attn.o_proj.weight                           columns
    layers.{i}.mlp_norm.weight      post_attention_layernorm.weight                   replicate
    layers.{i}.mlp.gate_up.weight   mlp.{gate,up}_proj.weight                         gate_up
    layers.{i}.mlp.down.weight      mlp.down_proj.weight                              columns
    norm.weight                     model.norm.weight                                 replicate
    lm_head.weight                  lm_head.weight  (absent when tied)                vocab_rows

Surgeries, for TP rank r of tp:
    replicate   the whole tensor on every rank
    vocab_rows  rows [r V/tp, (r+1) V/tp)
    columns     columns [r n/tp, (r+1) n/tp) of a row-parallel weight
    gate_up     [gate rows of r; up rows of r]: the two halves of SwiGLU split separately, so that
                each rank computes silu(gate) * up on its own columns
    qkv         per local KV group g: [q heads of g owned by r, k_g, v_g] (weights and biases alike),
                the rows ``TPLayout.qkv_row_blocks`` names (parallel/layout.py: which ranks hold
                which heads, replicas included when tp > nkv)

Tied embeddings: the HF file has no lm_head.weight, the native model none either (the head reads
``embed.weight``). Readers slice rows lazily, so a rank reads only the bytes of its shard.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Callable

import torch

from ..cli import UserError
from ..model_config import ModelConfig
from ..parallel.layout import TPLayout, chunk
from .safetensors_io import SafetensorsFile

REPLICATE, VOCAB_ROWS, COLUMNS, GATE_UP, QKV = "replicate", "vocab_rows", "columns", "gate_up", "qkv"


class CheckpointError(UserError):
    """A checkpoint that does not match what its config promises."""


@dataclass(frozen=True)
class Entry:
    native: str
    hf: tuple[str, ...]
    surgery: str


def name_table(cfg: ModelConfig) -> list[Entry]:
    """Every native parameter of a model with this config, in state_dict order."""
    table = [Entry("embed.weight", ("model.embed_tokens.weight",), VOCAB_ROWS)]
    for i in range(cfg.num_layers):
        n, p = f"layers.{i}.", f"model.layers.{i}."
        table += [
            Entry(n + "attn_norm.weight", (p + "input_layernorm.weight",), REPLICATE),
            Entry(n + "attn.qkv.weight", tuple(p + f"self_attn.{x}_proj.weight" for x in "qkv"), QKV),
        ]
        if cfg.qkv_bias:
            table.append(Entry(n + "attn.qkv.bias", tuple(p + f"self_attn.{x}_proj.bias" for x in "qkv"), QKV))
        if cfg.qk_norm:
            table += [Entry(n + f"attn.{x}_norm.weight", (p + f"self_attn.{x}_norm.weight",), REPLICATE) for x in "qk"]
        table += [
            Entry(n + "attn.out.weight", (p + "self_attn.o_proj.weight",), COLUMNS),
            Entry(n + "mlp_norm.weight", (p + "post_attention_layernorm.weight",), REPLICATE),
            Entry(n + "mlp.gate_up.weight", (p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"), GATE_UP),
            Entry(n + "mlp.down.weight", (p + "mlp.down_proj.weight",), COLUMNS),
        ]
    table.append(Entry("norm.weight", ("model.norm.weight",), REPLICATE))
    if not cfg.tie_word_embeddings:
        table.append(Entry("lm_head.weight", ("lm_head.weight",), VOCAB_ROWS))
    return table


def check_counts(cfg: ModelConfig, names, embed_shape, layer_prefix: str, source: str) -> None:
    """The config's sizes against what the checkpoint's files hold, before anything is built from
    them (a name table of a billion layers, a model of a billion rows): the layer count against the
    layers the files name, the vocabulary and hidden size against the embedding's shape."""
    held = {int(n[len(layer_prefix):].split(".", 1)[0]) for n in names
            if n.startswith(layer_prefix) and n[len(layer_prefix):].split(".", 1)[0].isdigit()}
    consecutive = held == set(range(len(held)))
    if len(held) != cfg.num_layers or not consecutive:
        have = f"layers 0 to {len(held) - 1}" if consecutive and held else f"{len(held)} layers"
        raise CheckpointError(f"{source}: the config says {cfg.num_layers} layers (num_hidden_layers), the files "
                              f"hold {have}")
    if embed_shape is not None and tuple(embed_shape) != (cfg.vocab_size, cfg.hidden_size):
        raise CheckpointError(f"{source}: the config says vocab_size {cfg.vocab_size} and hidden_size "
                              f"{cfg.hidden_size}; the embedding in the files is {list(embed_shape)}")


def hf_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The shape every HF tensor must have under this config."""
    h, f, hd, v = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim, cfg.vocab_size
    shapes = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,)}
    if not cfg.tie_word_embeddings:
        shapes["lm_head.weight"] = (v, h)
    for i in range(cfg.num_layers):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
            p + "self_attn.q_proj.weight": (cfg.num_heads * hd, h),
            p + "self_attn.k_proj.weight": (cfg.num_kv_heads * hd, h),
            p + "self_attn.v_proj.weight": (cfg.num_kv_heads * hd, h),
            p + "self_attn.o_proj.weight": (h, cfg.num_heads * hd),
            p + "mlp.gate_proj.weight": (f, h), p + "mlp.up_proj.weight": (f, h),
            p + "mlp.down_proj.weight": (h, f),
        })
        if cfg.qkv_bias:
            shapes.update({p + "self_attn.q_proj.bias": (cfg.num_heads * hd,),
                           p + "self_attn.k_proj.bias": (cfg.num_kv_heads * hd,),
                           p + "self_attn.v_proj.bias": (cfg.num_kv_heads * hd,)})
        if cfg.qk_norm:
            shapes.update({p + "self_attn.q_norm.weight": (hd,), p + "self_attn.k_norm.weight": (hd,)})
    return shapes


# A reader returns rows [start, stop) of an HF tensor (all rows for None), and optionally only
# columns [start, stop); it loads nothing else.
Reader = Callable[[str, "slice | None", "slice | None"], torch.Tensor]


def shard_for_rank(entry: Entry, read: Reader, layout: TPLayout, rank: int) -> torch.Tensor:
    """Build rank r's shard of a native parameter from HF tensors, reading only what it needs."""
    cfg, tp = layout.cfg, layout.tp
    if entry.surgery == REPLICATE:
        return read(entry.hf[0], None, None)
    if entry.surgery == VOCAB_ROWS:
        return read(entry.hf[0], chunk(cfg.vocab_size, rank, tp), None)
    if entry.surgery == COLUMNS:
        width = cfg.num_heads * cfg.head_dim if entry.native.endswith("attn.out.weight") else cfg.intermediate_size
        return read(entry.hf[0], None, chunk(width, rank, tp))
    if entry.surgery == GATE_UP:
        rows = chunk(cfg.intermediate_size, rank, tp)
        return torch.cat([read(entry.hf[0], rows, None), read(entry.hf[1], rows, None)])
    if entry.surgery == QKV:
        return torch.cat([read(entry.hf[i], rows, None) for i, rows in layout.qkv_row_blocks(rank)])
    raise AssertionError(f"unknown surgery {entry.surgery}")


def _own_tree(path: str) -> str:
    """The directory a checkpoint's files may lie in: the checkpoint itself, or, for a snapshot of
    the Hugging Face cache (``models--ORG--NAME/snapshots/REVISION``, whose files are links into
    ``models--ORG--NAME/blobs``), the cache's tree of that model."""
    real = os.path.realpath(path)
    parent = os.path.dirname(real)
    if os.path.basename(parent) == "snapshots" and os.path.isdir(os.path.join(os.path.dirname(parent), "blobs")):
        return os.path.dirname(parent)
    return real


class HFCheckpointReader:
    """Sliced access to the tensors of an HF safetensors checkpoint (one file, or shards listed by
    ``model.safetensors.index.json``), reading only the bytes asked for."""

    def __init__(self, path: str):
        self.path = path
        index = os.path.join(path, "model.safetensors.index.json")
        single = os.path.join(path, "model.safetensors")
        if os.path.exists(index):
            try:
                with open(index) as f:
                    weight_map = json.load(f)["weight_map"]
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
                raise CheckpointError(f"{index}: not a valid index ({type(e).__name__}: {e})") from None
            if not isinstance(weight_map, dict):
                raise CheckpointError(f"{index}: weight_map is not an object")
            root = _own_tree(path)
            self.files = {}
            for name, file in weight_map.items():
                full = os.path.join(path, file) if isinstance(file, str) else ""
                if not os.path.realpath(full).startswith(root + os.sep):  # "../x", "/etc/x", links out
                    raise CheckpointError(f"{index}: {name} is mapped to {file!r}, not a file inside the checkpoint")
                self.files[name] = full
        elif os.path.exists(single):
            self.files = {name: single for name in SafetensorsFile(single).names()}
        else:
            raise CheckpointError(f"{path}: no model.safetensors or model.safetensors.index.json")
        self._open = {}

    def _file(self, name: str) -> SafetensorsFile:
        file = self.files[name]
        if file not in self._open:
            if not os.path.exists(file):
                raise CheckpointError(f"{file}: listed in the index but missing")
            self._open[file] = SafetensorsFile(file)
            if name not in self._open[file].names():
                raise CheckpointError(f"{file}: the index places {name} here, but it is not in the file")
        return self._open[file]

    def names(self) -> set[str]:
        return set(self.files)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._file(name).shape(name)

    def dtype(self, name: str) -> torch.dtype:
        return self._file(name).dtype(name)

    def read(self, name: str, rows: slice | None = None, cols: slice | None = None) -> torch.Tensor:
        return self._file(name).read(name, rows, cols)

    def validate(self, cfg: ModelConfig) -> None:
        """Every tensor the config needs is present with its shape, and nothing unknown is."""
        present = self.names()
        embed = "model.embed_tokens.weight"
        check_counts(cfg, present, self.shape(embed) if embed in present else None, "model.layers.", self.path)
        expected = hf_shapes(cfg)
        # Tied checkpoints sometimes carry a copy of the head anyway; old ones carry RoPE buffers.
        ignorable = {n for n in present if n.endswith("rotary_emb.inv_freq")}
        if cfg.tie_word_embeddings:
            ignorable.add("lm_head.weight")
        missing = sorted(set(expected) - present)
        extra = sorted(present - set(expected) - ignorable)
        if missing:
            raise CheckpointError(f"{self.path}: missing tensor(s) {', '.join(missing[:5])}"
                                  + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
        if extra:
            raise CheckpointError(f"{self.path}: unexpected tensor(s) {', '.join(extra[:5])}"
                                  + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
                                  + f" for {cfg.architecture}")
        for name, shape in expected.items():
            if self.shape(name) != shape:
                raise CheckpointError(f"{self.path}: tensor {name} has shape {list(self.shape(name))}, "
                                      f"the config implies {list(shape)}")


def merge_shards(entry: Entry, shards, cfg: ModelConfig) -> list[torch.Tensor]:
    """Inverse of ``shard_for_rank``: the HF tensors of ``entry`` from all TP ranks' shards.

    ``shards`` may be lazy (each item read when indexed): every shard is indexed once, in rank
    order, and copied into preallocated outputs, so merging holds about one full tensor.
    Copies that several ranks hold (replicated tensors, KV heads replicated when tp > nkv) must be
    identical; a mismatch means the replicas drifted, and is an error rather than a silent choice.
    """
    tp, first = len(shards), shards[0]
    if entry.surgery == REPLICATE:
        for r in range(1, tp):
            if not torch.equal(shards[r], first):
                raise CheckpointError(f"{entry.native}: replicated copies differ between TP ranks 0 and {r}")
        return [first]
    if entry.surgery in (VOCAB_ROWS, COLUMNS):
        dim = 0 if entry.surgery == VOCAB_ROWS else 1
        width = first.shape[dim]
        shape = list(first.shape)
        shape[dim] *= tp
        out = first.new_empty(shape)
        out.narrow(dim, 0, width).copy_(first)
        del first  # hold the output and one shard at a time: these are the largest tensors
        for r in range(1, tp):
            out.narrow(dim, r * width, width).copy_(shards[r])
        return [out]
    if entry.surgery == GATE_UP:
        rows = first.shape[0] // 2
        gate, up = first.new_empty((rows * tp, *first.shape[1:])), first.new_empty((rows * tp, *first.shape[1:]))
        for r in range(tp):
            shard = first if r == 0 else shards[r]
            gate[r * rows:(r + 1) * rows], up[r * rows:(r + 1) * rows] = shard[:rows], shard[rows:]
        return [gate, up]
    if entry.surgery == QKV:
        layout, hd, rest = TPLayout(cfg, tp), cfg.head_dim, first.shape[1:]
        out = [first.new_empty((n * hd, *rest)) for n in (cfg.num_heads, cfg.num_kv_heads, cfg.num_kv_heads)]
        written = [torch.zeros(t.shape[0], dtype=torch.bool) for t in out]
        for r in range(tp):
            shard, offset = (first if r == 0 else shards[r]), 0
            for i, rows in layout.qkv_row_blocks(r):
                block = shard[offset: offset + rows.stop - rows.start]
                offset += rows.stop - rows.start
                if written[i][rows].any():
                    if not torch.equal(out[i][rows], block):
                        raise CheckpointError(f"{entry.native}: replicated KV head rows {rows.start}:"
                                              f"{rows.stop} differ between TP ranks")
                else:
                    out[i][rows] = block
                    written[i][rows] = True
        return out
    raise AssertionError(f"unknown surgery {entry.surgery}")
