"""The native checkpoint format (version 1) and the streaming writers of both formats.

A native checkpoint directory (docs/checkpoint_format.md has the full description):

    megatron_redi.json              format name and version, TP size, dtype, the model's HF config
    model/tp_rank_00.safetensors    rank 0's parameters, native names, fused TP layouts
    model/tp_rank_01.safetensors    ...
    tokenizer files, generation_config.json   copied from the source checkpoint when present
    training/                       optimizer, scheduler, sampler and RNG state (trainer checkpoints)

Both readers (``HFCheckpointReader`` and ``NativeCheckpointReader``) present the same view: HF
tensor names, read by row/column slices. Every conversion is therefore "read an HF view, write a
format": hf-to-native, native-to-hf and native-to-native (resharding) share ``write_native`` and
``write_hf``, which stream tensor by tensor and hold about one tensor in memory.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time

import torch
from tqdm import tqdm

from ..model_config import ModelConfig
from ..settings import load_json
from ..parallel.layout import LayoutError, TPLayout
from .hf_mapping import CheckpointError, check_counts, hf_shapes, merge_shards, name_table, shard_for_rank
from .safetensors_io import DTYPE_NAMES, SafetensorsFile, StreamingWriter

FORMAT_NAME = "megatron_redi"
FORMAT_VERSION = 1
METADATA_FILE = "megatron_redi.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                   "merges.txt", "tokenizer.model", "added_tokens.json", "chat_template.jinja",
                   "chat_template.json", "generation_config.json")


def rank_file(rank: int) -> str:
    return os.path.join("model", f"tp_rank_{rank:02d}.safetensors")


def is_native(path: str) -> bool:
    return os.path.exists(os.path.join(path, METADATA_FILE))


def shard_shape(entry, layout: TPLayout, rank: int) -> tuple[int, ...]:
    """The shape of rank r's shard, computed on meta tensors (no data)."""
    shapes = hf_shapes(layout.cfg)

    def meta_read(name, rows, cols):
        t = torch.empty(shapes[name], device="meta")
        t = t[rows] if rows is not None else t
        return t[:, cols] if cols is not None else t

    return tuple(shard_for_rank(entry, meta_read, layout, rank).shape)


class NativeCheckpointReader:
    """Reads a native checkpoint; ``read`` gives the HF view (shards merged), ``read_shard`` a
    rank's own tensor. Opening checks the format version and every tensor's name and shape."""

    def __init__(self, path: str):
        self.path = path
        meta_file = os.path.join(path, METADATA_FILE)
        meta = load_json(meta_file, CheckpointError, missing="not a native checkpoint (no such file)")
        if meta.get("format") != FORMAT_NAME:
            raise CheckpointError(f"{meta_file}: format {meta.get('format')!r} is not {FORMAT_NAME!r}")
        if meta.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(f"{meta_file}: format_version {meta.get('format_version')!r} is not "
                                  f"supported (this reader knows version {FORMAT_VERSION})")
        if not isinstance(meta.get("model_config"), dict):
            raise CheckpointError(f"{meta_file}: model_config is missing or not an object")
        tp = meta.get("tp_size")
        if not isinstance(tp, int) or isinstance(tp, bool) or tp < 1:
            raise CheckpointError(f"{meta_file}: tp_size {tp!r} is not a positive integer")
        self.metadata = meta
        self.cfg = ModelConfig.from_hf_dict(meta["model_config"], source=meta_file)
        self.tp_size = tp
        self._files = [SafetensorsFile(os.path.join(path, rank_file(r))) for r in range(self.tp_size)]
        first = self._files[0]
        embed = first.shape("embed.weight") if "embed.weight" in first.names() else None
        check_counts(self.cfg, first.names(), embed and (embed[0] * self.tp_size, *embed[1:]), "layers.", first.path)
        self._table = name_table(self.cfg)
        self._entry_of = {hf: e for e in self._table for hf in e.hf}
        self._cached: tuple[str, dict] | None = None
        self._validate()

    def _validate(self):
        try:
            layout = TPLayout(self.cfg, self.tp_size)
        except LayoutError as e:
            raise CheckpointError(f"{os.path.join(self.path, METADATA_FILE)}: {e}") from None
        for r, f in enumerate(self._files):
            expected = {e.native: shard_shape(e, layout, r) for e in self._table}
            names = set(f.names())
            missing, extra = sorted(set(expected) - names), sorted(names - set(expected))
            if missing or extra:
                what = f"missing {missing[:5]}" if missing else f"unexpected {extra[:5]}"
                raise CheckpointError(f"{f.path}: {what} tensor(s)")
            for name, shape in expected.items():
                if f.shape(name) != shape:
                    raise CheckpointError(f"{f.path}: tensor {name} has shape {list(f.shape(name))}, "
                                          f"expected {list(shape)} for TP rank {r} of {self.tp_size}")

    @property
    def dtype(self) -> torch.dtype:
        return self._files[0].dtype(self._table[0].native)

    def names(self) -> set[str]:
        return set(self._entry_of)

    def shard_shapes(self, rank: int) -> dict[str, tuple[int, ...]]:
        """TP rank ``rank``'s tensors and their shapes, from its file's header."""
        return {name: self._files[rank].shape(name) for name in self._files[rank].names()}

    def read_shard(self, native_name: str, rank: int) -> torch.Tensor:
        return self._files[rank].read(native_name)

    def read(self, name: str, rows: slice | None = None, cols: slice | None = None) -> torch.Tensor:
        entry = self._entry_of[name]
        if self._cached is None or self._cached[0] != entry.native:  # keep one merged entry
            self._cached = None  # free the previous entry before reading the next
            shards = _LazyShards(self._files, entry.native)
            self._cached = (entry.native, dict(zip(entry.hf, merge_shards(entry, shards, self.cfg))))
        t = self._cached[1][name]
        t = t[rows] if rows is not None else t
        return t[:, cols] if cols is not None else t


class _LazyShards:
    """The TP shards of one native tensor, each read from its file when indexed."""

    def __init__(self, files, name):
        self.files, self.name = files, name

    def __len__(self):
        return len(self.files)

    def __getitem__(self, rank):
        return self.files[rank].read(self.name)


def open_checkpoint(path: str):
    """(reader, config) for an HF or a native checkpoint directory."""
    from .hf_mapping import HFCheckpointReader

    if not os.path.isdir(path):
        raise CheckpointError(f"{path}: no such checkpoint directory")
    if is_native(path):
        reader = NativeCheckpointReader(path)
        return reader, reader.cfg
    cfg = ModelConfig.from_hf(path)
    reader = HFCheckpointReader(path)
    reader.validate(cfg)
    return reader, cfg


# ---- writing ----------------------------------------------------------------------------------

def copy_side_files(src: str, dst: str) -> None:
    """Tokenizer files and generation_config.json travel with the weights."""
    for name in TOKENIZER_FILES:
        if os.path.exists(os.path.join(src, name)):
            shutil.copy2(os.path.join(src, name), os.path.join(dst, name))


class Stats:
    def __init__(self):
        self.tensors, self.bytes, self.start = 0, 0, time.time()

    def add(self, t: torch.Tensor):
        self.tensors += 1
        self.bytes += t.numel() * t.element_size()

    def summary(self) -> str:
        return (f"{self.tensors} tensors, {self.bytes / 2**30:.2f} GiB written in "
                f"{time.time() - self.start:.1f} s")


def write_native(reader, cfg: ModelConfig, out_dir: str, tp: int, dtype: torch.dtype,
                 extra_metadata: dict | None = None, progress: bool = True) -> Stats:
    """Write the native files of ``cfg`` at TP size ``tp`` from any HF-view reader."""
    layout = TPLayout(cfg, tp)
    table = name_table(cfg)
    os.makedirs(os.path.join(out_dir, "model"), exist_ok=True)
    writers = [StreamingWriter(os.path.join(out_dir, rank_file(r)),
                               [(e.native, dtype, shard_shape(e, layout, r)) for e in table])
               for r in range(tp)]
    stats = Stats()
    same_layout = isinstance(reader, NativeCheckpointReader) and reader.tp_size == tp
    bar = tqdm(total=len(table) * tp, desc="writing native", unit="tensor", disable=not progress)  # as Stats counts
    for entry in table:
        for r, w in enumerate(writers):
            shard = (reader.read_shard(entry.native, r) if same_layout
                     else shard_for_rank(entry, reader.read, layout, r))
            shard = shard.to(dtype)
            w.write(entry.native, shard)
            stats.add(shard)
            bar.update()
    bar.close()
    for w in writers:
        w.close()
    meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "tp_size": tp,
            "dtype": DTYPE_NAMES[dtype], "model_config": cfg.to_hf_dict(), **(extra_metadata or {})}
    with open(os.path.join(out_dir, METADATA_FILE), "w") as f:
        json.dump(meta, f, indent=2)
    return stats


def parse_size(text: str) -> int:
    units = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "B": 1}
    t = text.strip().upper()
    for unit in sorted(units, key=len, reverse=True):
        if t.endswith(unit):
            try:
                return int(float(t[: -len(unit)]) * units[unit])
            except ValueError:
                break
    raise ValueError(f"cannot read size {text!r} (use e.g. 5GB, 500MB)")


def write_hf(reader, cfg: ModelConfig, out_dir: str, dtype: torch.dtype, max_shard_size: int,
             progress: bool = True) -> Stats:
    """Write config.json and model.safetensors (or shards + index) from any HF-view reader."""
    shapes = hf_shapes(cfg)
    names = [hf for e in name_table(cfg) for hf in e.hf]
    itemsize = torch.empty((), dtype=dtype).element_size()
    shards, size = [[]], 0  # greedy packing in table order; an oversized tensor gets its own shard
    for name in names:
        nbytes = math.prod(shapes[name]) * itemsize
        if shards[-1] and size + nbytes > max_shard_size:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    files = (["model.safetensors"] if len(shards) == 1 else
             [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
    stats = Stats()
    bar = tqdm(total=len(names), desc="writing HF", unit="tensor", disable=not progress)
    for file, shard in zip(files, shards):
        w = StreamingWriter(os.path.join(out_dir, file), [(n, dtype, shapes[n]) for n in shard])
        for name in shard:
            t = reader.read(name).to(dtype)
            w.write(name, t)
            stats.add(t)
            bar.update()
        w.close()
    bar.close()
    if len(files) > 1:
        index = {"metadata": {"total_size": stats.bytes},
                 "weight_map": {n: f for f, shard in zip(files, shards) for n in shard}}
        with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
            json.dump(index, f, indent=2)
    config = cfg.to_hf_dict()
    config["dtype"] = str(dtype).removeprefix("torch.")
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    if not os.path.exists(os.path.join(out_dir, "generation_config.json")):
        gen = {k: cfg.extra[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if cfg.extra.get(k) is not None}
        with open(os.path.join(out_dir, "generation_config.json"), "w") as f:
            json.dump(gen, f, indent=2)
    return stats
