"""Resuming at another parallel layout: a preempted job often comes back on another number of GPUs.

A checkpoint saved at TP size T over D data-parallel ranks (DP x CP; ZeRO-1 or not) holds the fp32 master
weights one file per TP rank, and the AdamW moments as flat buffers, one per TP rank (and, with
ZeRO-1, one slice per DP rank). For this run's TP rank and DP slice:

- the master weights of each parameter are rebuilt by the converter's own rules: the T shards
  merged into the HF tensors (``merge_shards``), this rank's shard cut from them
  (``shard_for_rank``); the values are copied, never recomputed;
- the moments have the weights' shapes, so they take the same road: each saved flat buffer is
  cut back into its parameters (the optimizer's order, at the saved TP size's shapes), merged,
  re-cut for this TP rank, laid into this run's flat buffer and sliced for this DP rank.

Moments of parameters several TP ranks share are equal on all of them (their gradients are
synchronised), which ``merge_shards`` checks. Every rank reads every saved moment file of its
parameters: memory about twice the fp32 model at the moment of resuming.
"""

from __future__ import annotations

import os

import torch
from safetensors.torch import load_file

from ..checkpoint.hf_mapping import merge_shards, name_table, shard_for_rank
from ..checkpoint.native import NativeCheckpointReader, shard_shape
from ..parallel import ParallelState, TPLayout


def same_layout(state: dict, parallel: ParallelState, zero1: bool) -> bool:
    """Whether the checkpoint's files are laid out as this run's, rank for rank (the flat buffers'
    padding follows the DP size too). A checkpoint's "dp_size" counts the ranks its optimizer
    state was sliced over, DP x CP: context parallelism leaves no other mark on the layout."""
    return (state["tp_size"], state["dp_size"], state["zero1"]) == (parallel.tp_size, parallel.dp_cp_size, zero1)


def optimizer_files(path: str, state: dict) -> dict[tuple[int, int], str]:
    """(TP rank, DP rank) -> the moment file the checkpoint holds for it."""
    dps = range(state["dp_size"]) if state["zero1"] else range(1)
    return {(t, d): os.path.join(path, "training", f"optim_tp{t:02d}_dp{d:02d}.safetensors")
            for t in range(state["tp_size"]) for d in dps}


def _reader(tensors: dict[str, torch.Tensor]):
    """shard_for_rank's reader over tensors in memory."""
    def read(name, rows=None, cols=None):
        t = tensors[name]
        t = t if rows is None else t[rows]
        return t if cols is None else t[:, cols]
    return read


def master_weights(reader: NativeCheckpointReader, parallel: ParallelState) -> dict[str, torch.Tensor]:
    """This TP rank's fp32 master weights, from a checkpoint of any TP size."""
    layout = TPLayout(reader.cfg, parallel.tp_size)
    return {e.native: shard_for_rank(e, reader.read, layout, parallel.tp_rank).clone() for e in name_table(reader.cfg)}


def moments(path: str, state: dict, cfg, parallel: ParallelState, groups: list[list[str]], numels: list[int],
            slices: list[slice]) -> dict[str, torch.Tensor]:
    """``exp_avg.i`` and ``exp_avg_sq.i`` of this rank in this run's layout: ``groups[i]`` the
    parameter names of flat buffer i in order, ``numels[i]`` its padded length, ``slices[i]`` this
    rank's part of it."""
    files = optimizer_files(path, state)
    saved = {key: load_file(f) for key, f in files.items()}
    old_layout, new_layout = TPLayout(cfg, state["tp_size"]), TPLayout(cfg, parallel.tp_size)
    entries = {e.native: e for e in name_table(cfg)}
    out = {}
    for i, names in enumerate(groups):
        for kind in ("exp_avg", "exp_avg_sq"):
            key = f"{kind}.{i}"
            per_rank = []  # each saved TP rank's parameters, cut from its flat buffer
            for t in range(state["tp_size"]):
                flat = torch.cat([saved[(tt, d)][key] for (tt, d) in sorted(saved) if tt == t])
                shards, offset = {}, 0
                for name in names:
                    shape = shard_shape(entries[name], old_layout, t)
                    n = int(torch.Size(shape).numel())
                    shards[name] = flat[offset:offset + n].view(shape)
                    offset += n
                per_rank.append(shards)
            pieces = []
            for name in names:
                e = entries[name]
                merged = dict(zip(e.hf, merge_shards(e, [shards[name] for shards in per_rank], cfg)))
                pieces.append(shard_for_rank(e, _reader(merged), new_layout, parallel.tp_rank).reshape(-1))
            full = torch.zeros(numels[i], dtype=torch.float32)
            laid = torch.cat(pieces) if pieces else full[:0]
            full[:laid.numel()] = laid
            out[key] = full[slices[i]].clone()
    return out
