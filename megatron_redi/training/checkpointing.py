"""Training checkpoints: the native format (docs/checkpoint_format.md) plus ``training/``.

    checkpoints/step_00000100/
      megatron_redi.json, model/tp_rank_RR.safetensors   fp32 master weights: a native checkpoint
                                                          that the converter and from_pretrained read
      tokenizer files
      training/state.json                  step, sampler, bad-step count, config (JSON)
      training/optim_tpRR_dpDD.safetensors AdamW moments (this TP rank's; with ZeRO-1 this DP slice)
      training/rng_rankNNNNN.safetensors   torch CPU (and CUDA) generator states

Nothing is pickled: tensors are safetensors, the rest JSON, so loading executes nothing. Every
rank writes its own files into ``.step_N.tmp``, in the background by default; rank 0 renames it to
``step_N`` once every rank's part is on disk (checkpoint_writer.py), so a kill (or a full disk) at
any moment leaves the previous checkpoint as the newest complete one. Resume takes the newest
checkpoint that validates, warning about any newer one that does not.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import threading
import warnings

import torch
from safetensors.torch import load_file

from ..atomic import OutputExistsError, check_output, publish
from ..checkpoint.hf_mapping import CheckpointError, name_table
from ..checkpoint.native import METADATA_FILE, NativeCheckpointReader, copy_side_files, write_native
from ..checkpoint.safetensors_io import SafetensorsError, SafetensorsFile
from ..settings import ConfigError, load_json, local_directory
from ..parallel import ParallelState
from ..parallel.collectives import all_ranks, any_rank
from . import reshard

STEP_DIR = re.compile(r"^step_(\d{8})$")


def checkpoint_dirs(root: str) -> list[tuple[int, str]]:
    """(step, path) of the complete checkpoints under ``root``, newest first."""
    if not os.path.isdir(root):
        return []
    found = [(int(m.group(1)), os.path.join(root, name)) for name in os.listdir(root)
             if (m := STEP_DIR.match(name))]
    return sorted(found, reverse=True)


def list_checkpoints(run: str | None = None, paths: list[str] | None = None) -> list[dict]:
    """``{label, checkpoint, step}`` of every checkpoint kept under ``run``/checkpoints (oldest first),
    or of the directories in ``paths``; step None where neither the name (step_N) nor native
    metadata tells it. Labels (the directory names) must differ: outputs are named after them."""
    if run:
        found = checkpoint_dirs(os.path.join(local_directory(run, "the run"), "checkpoints"))
        if not found:
            raise ConfigError(f"{run}: no checkpoints (expected {run}/checkpoints/step_N)")
        paths = [path for _, path in reversed(found)]
    else:
        paths = [local_directory(p, "a checkpoint") for p in paths or ()]
    entries = [{"label": os.path.basename(os.path.normpath(p)), "checkpoint": p, "step": _training_step(p)}
               for p in paths]
    labels = [e["label"] for e in entries]
    if len(set(labels)) < len(labels):
        raise ConfigError(f"two checkpoints share a directory name ({', '.join(labels)}): give them separate outputs")
    return entries


def _training_step(path: str) -> int | None:
    if m := STEP_DIR.match(os.path.basename(os.path.normpath(path))):
        return int(m.group(1))
    meta = os.path.join(path, METADATA_FILE)
    return load_json(meta, ConfigError).get("training_step") if os.path.exists(meta) else None


def lock_run_directory(output_dir: str, parallel: ParallelState):
    """Hold ``output_dir``/.lock (rank 0, an exclusive flock, released by the kernel when the process
    ends however it ends) so that a second run started in the same directory, say a resubmitted job
    whose predecessor is still writing its preemption checkpoint, stops at once instead of
    interleaving its metrics and checkpoints with the first one's. Returns the open lock file
    (keep it referenced for the run's life); every rank raises together when it is taken. Where the
    filesystem has no flock the run goes on unlocked."""
    import fcntl

    held, owner = None, ""
    if parallel.rank == 0:
        os.makedirs(output_dir, exist_ok=True)
        held = open(os.path.join(output_dir, ".lock"), "a+")
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held.truncate(0)
            held.write(f"{os.getpid()}\n")
            held.flush()
        except BlockingIOError:
            held.seek(0)
            owner = held.read().strip()
            held.close()
            held = None
        except OSError:  # no flock on this filesystem
            pass
    busy = parallel.rank == 0 and held is None
    if any_rank(parallel, busy):
        raise CheckpointError(f"{output_dir}: another run (process {owner or '?'}) is writing this directory; wait "
                              "for it to end (a preempted run writes its checkpoint first), or choose another "
                              "train.output_dir")
    return held


def holds_checkpoints(path: str) -> bool:
    """``path`` is, or holds within two levels, a checkpoint or a run's checkpoints directory."""
    if not os.path.isdir(path):
        return False
    for dirpath, dirs, files in os.walk(path):
        if METADATA_FILE in files or "checkpoints" in dirs or any(STEP_DIR.match(d) for d in dirs):
            return True
        if dirpath.count(os.sep) - path.rstrip(os.sep).count(os.sep) >= 2:
            dirs.clear()
    return False


def check_export_target(target: str, run_dir: str, overwrite: bool, inputs: tuple[str, ...] = ()) -> None:
    """Refuse an HF export that could destroy a run or its inputs: the run's own directory or one
    above it, its checkpoints or anything inside them, any directory holding checkpoints, the
    run's ``inputs`` (its model, data...), and (unless ``overwrite``) any non-empty directory."""
    run_dir = os.path.realpath(run_dir)
    real = os.path.realpath(target)
    if real == run_dir or run_dir.startswith(real.rstrip(os.sep) + os.sep):
        raise OutputExistsError(f"{target}: refused as export target, it is or contains the run's directory {run_dir}")
    check_output(target, overwrite, keep=(os.path.join(run_dir, "checkpoints"), *inputs))
    if holds_checkpoints(target):
        raise OutputExistsError(f"{target}: refused as export target, it holds checkpoints")


class Thinning:
    """Rank 0 thins the checkpoints older than the newest ``keep``, each to its weights in bf16 (or
    removed), in a thread while training goes on. The rewrite reads and writes the whole model
    (minutes for a 7B one); done inside save() it held every other rank in a collective meanwhile,
    and an error there left them waiting. One thinning at a time: the next one, and the end of the
    run, wait for it; a failure leaves the old checkpoint whole and warns."""

    def __init__(self, enabled: bool):
        self.enabled, self._thread = enabled, None

    def start(self, root: str, keep: int, keep_weights: bool) -> None:
        if not self.enabled:
            return
        self.wait()
        old = [path for _, path in checkpoint_dirs(root)[keep:] if is_resumable(path) or not keep_weights]
        if old:
            self._thread = threading.Thread(target=self._thin, args=(old, keep_weights), name="checkpoint-thinning")
            self._thread.start()

    @staticmethod
    def _thin(paths: list[str], keep_weights: bool) -> None:
        for path in paths:
            try:
                if keep_weights:
                    keep_weights_only(path)
                else:
                    shutil.rmtree(path)
            except (OSError, CheckpointError, SafetensorsError) as e:
                warnings.warn(f"{path}: not thinned ({e}); it stays whole")

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None


def is_resumable(path: str) -> bool:
    return os.path.isdir(os.path.join(path, "training"))


def keep_weights_only(path: str, dtype: torch.dtype = torch.bfloat16) -> None:
    """Replace a whole checkpoint by its weights in ``dtype``: a native checkpoint that the evaluator,
    the converter and from_pretrained read (half the bytes of the fp32 master weights, no AdamW
    moments), no longer resumable. Written beside it and renamed over it."""
    if not is_resumable(path):
        return
    reader = NativeCheckpointReader(path)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.weights.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    copy_side_files(path, tmp)
    step = reader.metadata.get("training_step")
    write_native(reader, reader.cfg, tmp, reader.tp_size, dtype, {"training_step": step, "weights_only": True},
                 progress=False)
    del reader
    publish(tmp, path)


def validate(path: str, parallel: ParallelState) -> dict:
    """The checkpoint's state.json if every file this rank may read is whole; raises otherwise. Its
    TP and DP sizes may differ from this run's: the state is resharded (reshard.py)."""
    reader = NativeCheckpointReader(path)  # checks format, version, every tensor of every rank file
    with open(os.path.join(path, "training", "state.json")) as f:
        state = json.load(f)
    _check_moments(path, state, reader)
    del reader
    return state


def _check_moments(path: str, state: dict, reader: NativeCheckpointReader) -> None:
    """Every AdamW moment file holds the two moments of the two weight-decay groups (training/
    grad_buffer.py's flat layouts: matrices, then vectors), fp32, as long as the master weights of
    its TP rank imply for the checkpoint's DP size, from the files' headers alone."""
    replicas = state["dp_size"]
    for (tp, _), file in reshard.optimizer_files(path, state).items():
        shards = reader.shard_shapes(tp)
        moments = SafetensorsFile(file)
        want = {}
        for group, decay in enumerate((True, False)):  # no_weight_decay: parameters of fewer than 2 dimensions
            n = sum(math.prod(shape) for shape in shards.values() if (len(shape) >= 2) == decay)
            padded = n + (-n % replicas)
            for moment in ("exp_avg", "exp_avg_sq"):
                want[f"{moment}.{group}"] = (padded // replicas if state["zero1"] else padded,)
        held = {name: (moments.shape(name), moments.dtype(name)) for name in moments.names()}
        moments.close()
        if held != {name: (shape, torch.float32) for name, shape in want.items()}:
            raise CheckpointError(f"{file}: holds {sorted(held)} (shapes {[list(s) for s, _ in held.values()]}), not "
                                  f"the AdamW moments of TP rank {tp}: {[f'{n} {list(s)} float32' for n, s in want.items()]}")


def find_resumable(root: str, parallel: ParallelState) -> tuple[str, dict] | None:
    """The newest checkpoint that validates on every rank, or None; newer broken ones are skipped
    with a warning."""
    found = checkpoint_dirs(root)
    for step, path in found:
        if not is_resumable(path):  # weights kept for evaluation only
            continue
        try:
            state = validate(path, parallel)
            ok = 1
        except (CheckpointError, SafetensorsError, OSError, ValueError, KeyError) as e:
            ok, state, error = 0, None, e
        if all_ranks(parallel, ok):  # on the group's device: NCCL refuses a CPU flag
            return path, state
        if parallel.rank == 0:
            warnings.warn(f"checkpoint {path} is incomplete or damaged ({error if not ok else 'on another rank'}); "
                          "falling back to an older one")
    if found:  # starting over would write over them
        raise CheckpointError(f"{root}: none of its {len(found)} checkpoints can be resumed (damaged, or weights "
                              "only); move them away or choose another train.output_dir to start over")
    return None


def load(path: str, state: dict, parallel: ParallelState, optimizer) -> tuple[dict, dict]:
    """(master weights of this TP rank, AdamW moments of this rank) in the layout of this run's
    ``optimizer`` (a MasterParams), whatever the checkpoint's; restores the RNG."""
    reader = NativeCheckpointReader(path)
    if reshard.same_layout(state, parallel, optimizer.zero1):
        master = {e.native: reader.read_shard(e.native, parallel.tp_rank) for e in name_table(reader.cfg)}
        optim = load_file(reshard.optimizer_files(path, state)[(parallel.tp_rank, parallel.dp_cp_rank if state["zero1"] else 0)])
    else:
        master = reshard.master_weights(reader, parallel)
        optim = reshard.moments(path, state, reader.cfg, parallel, [[n for n, _ in lay.params] for lay in optimizer.layouts],
                                [lay.numel for lay in optimizer.layouts], optimizer.slices)
    rng_file = os.path.join(path, "training", f"rng_rank{parallel.rank:05d}.safetensors")
    if os.path.exists(rng_file):
        rng = load_file(rng_file)
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    return master, optim
