"""Training checkpoints: the native format (docs/checkpoint_format.md) plus ``training/``.

    checkpoints/step_00000100/
      megatron_redi.json, model/tp_rank_RR.safetensors   fp32 master weights: a native checkpoint
                                                          that the converter and from_pretrained read
      tokenizer files
      training/state.json                  step, sampler, bad-step count, config (JSON)
      training/optim_tpRR_dpDD.safetensors AdamW moments (this TP rank's; with ZeRO-1 this DP slice)
      training/rng_rankNNNNN.safetensors   torch CPU (and CUDA) generator states

Nothing is pickled: tensors are safetensors, the rest JSON, so loading executes nothing. Every
rank writes into ``.step_N.tmp``; rank 0 renames it to ``step_N`` after a barrier, so a kill at
any moment leaves the previous checkpoint as the newest complete one. Resume takes the newest
checkpoint that validates, warning about any newer one that does not.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from ..checkpoint.hf_mapping import CheckpointError, name_table
from ..checkpoint.native import (FORMAT_NAME, FORMAT_VERSION, METADATA_FILE, NativeCheckpointReader,
                                 copy_side_files, rank_file)
from ..checkpoint.safetensors_io import SafetensorsError, SafetensorsFile, StreamingWriter
from ..config import ModelConfig
from ..parallel import ParallelState

STEP_DIR = re.compile(r"^step_(\d{8})$")


def _barrier(parallel: ParallelState):
    if parallel.world_size > 1:
        dist.barrier()


def checkpoint_dirs(root: str) -> list[tuple[int, str]]:
    """(step, path) of the complete checkpoints under ``root``, newest first."""
    if not os.path.isdir(root):
        return []
    found = [(int(m.group(1)), os.path.join(root, name)) for name in os.listdir(root)
             if (m := STEP_DIR.match(name))]
    return sorted(found, reverse=True)


def save(root: str, step: int, cfg: ModelConfig, parallel: ParallelState, master: dict[str, torch.Tensor],
         optim_state: dict[str, torch.Tensor], zero1: bool, state: dict, side_files_from: str | None, keep: int) -> str:
    final = os.path.join(root, f"step_{step:08d}")
    tmp = os.path.join(root, f".step_{step:08d}.tmp")
    if parallel.rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(os.path.join(tmp, "model"))
        os.makedirs(os.path.join(tmp, "training"))
    _barrier(parallel)
    tp, dp = parallel.tp_rank, parallel.dp_rank
    if dp == 0:  # DP ranks hold identical weights: one copy per TP rank
        specs = [(e.native, torch.float32, tuple(master[e.native].shape)) for e in name_table(cfg)]
        writer = StreamingWriter(os.path.join(tmp, rank_file(tp)), specs)
        for name, _, _ in specs:
            writer.write(name, master[name])
        writer.close()
    if zero1 or dp == 0:
        save_file({k: v.contiguous().cpu() for k, v in optim_state.items()},
                  os.path.join(tmp, "training", f"optim_tp{tp:02d}_dp{dp:02d}.safetensors"))
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    save_file(rng, os.path.join(tmp, "training", f"rng_rank{parallel.rank:05d}.safetensors"))
    _barrier(parallel)
    if parallel.rank == 0:
        if side_files_from:
            copy_side_files(side_files_from, tmp)
        with open(os.path.join(tmp, "training", "state.json"), "w") as f:
            json.dump({**state, "tp_size": parallel.tp_size, "dp_size": parallel.dp_size, "zero1": zero1}, f, indent=2)
        meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "tp_size": parallel.tp_size,
                "dtype": "F32", "model_config": cfg.to_hf_dict(), "training_step": step}
        with open(os.path.join(tmp, METADATA_FILE), "w") as f:
            json.dump(meta, f, indent=2)
        shutil.rmtree(final, ignore_errors=True)
        os.rename(tmp, final)
        for _, old in checkpoint_dirs(root)[keep:]:
            shutil.rmtree(old, ignore_errors=True)
    _barrier(parallel)
    return final


def validate(path: str, parallel: ParallelState) -> dict:
    """The checkpoint's state.json if every file this rank needs is whole; raises otherwise."""
    reader = NativeCheckpointReader(path)  # checks format, version, every tensor of every rank file
    with open(os.path.join(path, "training", "state.json")) as f:
        state = json.load(f)
    if state["tp_size"] != parallel.tp_size:
        raise CheckpointError(f"{path}: saved with TP {state['tp_size']}, this run has TP {parallel.tp_size}")
    if state["zero1"] and state["dp_size"] != parallel.dp_size:
        raise CheckpointError(f"{path}: ZeRO-1 state saved over {state['dp_size']} DP ranks, this run has {parallel.dp_size}")
    SafetensorsFile(_optim_file(path, parallel, state)).close()
    del reader
    return state


def _optim_file(path, parallel, state):
    dp = parallel.dp_rank if state["zero1"] else 0
    return os.path.join(path, "training", f"optim_tp{parallel.tp_rank:02d}_dp{dp:02d}.safetensors")


def find_resumable(root: str, parallel: ParallelState) -> tuple[str, dict] | None:
    """The newest checkpoint that validates on every rank, or None; newer broken ones are skipped
    with a warning."""
    for step, path in checkpoint_dirs(root):
        try:
            state = validate(path, parallel)
            ok = 1
        except (CheckpointError, SafetensorsError, OSError, ValueError, KeyError) as e:
            ok, state, error = 0, None, e
        flag = torch.tensor([ok])
        if parallel.world_size > 1:
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        if flag.item():
            return path, state
        if parallel.rank == 0:
            warnings.warn(f"checkpoint {path} is incomplete or damaged ({error if not ok else 'on another rank'}); "
                          "falling back to an older one")
    return None


def load(path: str, state: dict, parallel: ParallelState) -> tuple[dict, dict]:
    """(master weights of this TP rank, optimizer tensors of this rank); restores the RNG."""
    reader = NativeCheckpointReader(path)
    master = {e.native: reader.read_shard(e.native, parallel.tp_rank) for e in name_table(reader.cfg)}
    optim = load_file(_optim_file(path, parallel, state))
    rng_file = os.path.join(path, "training", f"rng_rank{parallel.rank:05d}.safetensors")
    if os.path.exists(rng_file):
        rng = load_file(rng_file)
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    return master, optim
