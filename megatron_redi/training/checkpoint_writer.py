"""Writing a training checkpoint while the training goes on (checkpoint.async_save, the default).

A save runs in three phases:

1. **Copy** (the training waits): each rank copies what it writes to host memory (pinned on CUDA,
   reused from save to save), with its RNG states and the run's state, and returns to training.
   With ``async_save: false`` nothing is copied and the training waits for the whole save.
2. **Parts** (a thread on every rank, in parallel): the rank writes its own files into
   ``.step_N.tmp`` (the first DP rank of each TP rank its master weights; every DP rank its slice
   of the AdamW moments under ZeRO-1; every rank its RNG states), flushes them to disk, then
   declares them in ``parts/rank_NNNNN.json`` (names and sizes). Nothing is gathered to one rank.
3. **Manifest** (rank 0's thread): when every rank's declaration is there and its files have
   the declared sizes, rank 0 writes training/state.json and megatron_redi.json and renames the
   directory to ``step_N``. Until that rename there is no ``step_N``: a kill at any moment leaves
   the previous checkpoint the newest complete one, and the next start removes the leftovers.

One save is in flight at most. At every step boundary while one is, the ranks agree (two
one-flag all-reduces) whether it failed on any rank (every rank then stops with the error, and
rank 0 removes the partial directory) or is complete everywhere; the next save, the final one
and a stop wait for it. Nothing agrees from the threads: collectives stay on the main thread.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import threading
import time
from dataclasses import dataclass, field

import torch

from ..atomic import fsync, publish
from ..checkpoint.hf_mapping import CheckpointError, name_table
from ..checkpoint.native import FORMAT_NAME, FORMAT_VERSION, METADATA_FILE, copy_side_files, rank_file
from ..checkpoint.safetensors_io import StreamingWriter
from ..parallel import ParallelState, collectives

POLL_S = 0.05  # how often rank 0 looks for the other ranks' declarations


def remove_interrupted_saves(root: str, parallel: ParallelState) -> None:
    """Rank 0 removes what interrupted saves (and thinnings) left under ``root``, before this run
    writes any: a leftover part must never be published with a new save's."""
    if parallel.rank == 0:
        for stale in glob.glob(os.path.join(root, ".step_*.tmp")):
            shutil.rmtree(stale, ignore_errors=True)
    collectives.barrier(parallel)


class HostCopies:
    """Host buffers for the copy, kept from save to save (pinned on CUDA: the copy runs on the
    stream, without staging, and an event tells the writer when it has landed)."""

    def __init__(self):
        self._held: dict[str, torch.Tensor] = {}

    def copy(self, key: str, tensor: torch.Tensor) -> torch.Tensor:
        held = self._held.get(key)
        if held is None or held.shape != tensor.shape or held.dtype != tensor.dtype:
            held = self._held[key] = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=tensor.is_cuda)
        return held.copy_(tensor, non_blocking=tensor.is_cuda)

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self._held.values())

    @property
    def pinned(self) -> bool:
        return bool(self._held) and all(t.is_pinned() for t in self._held.values())


@dataclass
class Save:
    """One save: what this rank writes, taken at the step it was asked for."""
    step: int
    final: str
    tmp: str
    weights: dict[str, torch.Tensor] = field(default_factory=dict)
    moments: dict[str, torch.Tensor] = field(default_factory=dict)
    rng: dict[str, torch.Tensor] = field(default_factory=dict)
    manifest: dict | None = None  # rank 0: state.json's and megatron_redi.json's contents, side files
    copied: object = None  # a CUDA event marking the end of the copy
    error: BaseException | None = None
    started: float = field(default_factory=time.perf_counter)
    seconds: float | None = None  # from the call to the last file written (rank 0: published)


class CheckpointWriter:
    """Saves ``step_N`` under ``root``, in the background when ``asynchronous``. ``on_published``
    runs on the main thread of every rank once a save is complete everywhere (the trainer thins
    older checkpoints then)."""

    def __init__(self, root: str, parallel: ParallelState, asynchronous: bool, timeout_s: float,
                 on_published=None):
        self.root, self.parallel, self.asynchronous, self.timeout_s = root, parallel, asynchronous, timeout_s
        self.on_published = on_published or (lambda: None)
        self.copies = HostCopies() if asynchronous else None
        self.in_flight: Save | None = None
        self.last: Save | None = None  # the latest save started
        self._thread: threading.Thread | None = None
        self._cancel = threading.Event()

    # ---- the main thread ----------------------------------------------------------------------

    def reserve(self, cfg, master: dict[str, torch.Tensor], moments: dict[str, torch.Tensor], zero1: bool) -> None:
        """Take the host memory for the copy now (asynchronous saves): a run without enough of it
        fails at its start, not at its first checkpoint, and no save pays for the allocation."""
        if self.copies:
            self._parts(cfg, master, moments, zero1, self.copies.copy)

    def _parts(self, cfg, master, moments, zero1, keep) -> tuple[dict, dict]:
        """(weights, moments) that this rank writes, each tensor passed through ``keep``."""
        first = self.parallel.dp_cp_rank == 0  # DP (and CP) ranks hold identical weights: one copy per TP rank
        weights = {e.native: keep(e.native, master[e.native]) for e in name_table(cfg)} if first else {}
        return weights, ({k: keep(k, v) for k, v in moments.items()} if zero1 or first else {})

    def start(self, step: int, cfg, master: dict[str, torch.Tensor], moments: dict[str, torch.Tensor],
              zero1: bool, state: dict, side_files_from: str | None) -> Save:
        """Copy this rank's part of the checkpoint of ``step`` and write it in the background
        (synchronous saves: write it now, and return once it is published everywhere)."""
        self.wait()
        p = self.parallel
        save = Save(step, os.path.join(self.root, f"step_{step:08d}"), os.path.join(self.root, f".step_{step:08d}.tmp"))
        keep = self.copies.copy if self.copies else (lambda key, t: t)
        save.weights, save.moments = self._parts(cfg, master, moments, zero1, keep)
        save.rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            save.rng["cuda"] = torch.cuda.get_rng_state()
            if self.copies:
                save.copied = torch.cuda.Event()
                save.copied.record()
        if p.rank == 0:
            state = {**state, "tp_size": p.tp_size, "dp_size": p.dp_cp_size, "zero1": zero1}
            meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "tp_size": p.tp_size, "dtype": "F32",
                    "model_config": cfg.to_hf_dict(), "training_step": step}
            save.manifest = {"state": json.loads(json.dumps(state)), "meta": meta, "side_files_from": side_files_from}
        self.in_flight = self.last = save
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._write, args=(save,), name="checkpoint-writer")
        self._thread.start()
        if not self.asynchronous:
            self.wait()
        return save

    def poll(self) -> Save | None:
        """At a step boundary, on every rank: the save just completed everywhere, or None; raises
        CheckpointError on every rank when it failed on any."""
        return self._settle() if self.in_flight else None

    def wait(self) -> Save | None:
        """Until the save in flight (if any) is complete everywhere: that save, or None; raises
        CheckpointError on every rank when it failed on any."""
        while self.in_flight:
            self._thread.join(POLL_S)
            if done := self._settle():
                return done
        return None

    def abandon(self) -> None:
        """As the run ends on an error (no collectives): finish this rank's own part, let rank 0
        stop waiting for the others' (the partial directory stays, the next start removes it)."""
        if self._thread is not None:
            self._cancel.set()
            self._thread.join()
            self.in_flight = self._thread = None

    def _settle(self) -> Save | None:
        save, p = self.in_flight, self.parallel
        # read once, alive first: a thread that has ended has set its error, so no failure is read
        # as a completion between the two agreements
        alive = self._thread.is_alive()
        failed = collectives.any_rank(p, save.error is not None)
        if not failed and collectives.any_rank(p, alive):
            return None
        self.in_flight = None
        if not failed:
            self.on_published()
            return save
        self._cancel.set()  # rank 0 may still wait for a part that will never come
        self._thread.join()
        collectives.barrier(p)  # every writer has stopped: the partial directory can go
        if p.rank == 0:
            shutil.rmtree(save.tmp, ignore_errors=True)
        raise CheckpointError(f"{save.final}: the checkpoint could not be written ({save.error or 'failed on another rank'}); "
                              "nothing of it was kept, and the older checkpoints are intact")

    # ---- the writer thread ---------------------------------------------------------------------

    def _write(self, save: Save) -> None:
        try:
            self._write_part(save)
            if save.manifest is not None:
                self._publish(save)
            save.seconds = time.perf_counter() - save.started
        except Exception as e:  # handed to the main thread, which raises it on every rank
            save.error = e
        finally:  # the copies are the host buffers' (reused) or the live tensors: not ours to keep
            save.weights = save.moments = {}

    def _write_part(self, save: Save) -> None:
        p = self.parallel
        if save.copied is not None:
            save.copied.synchronize()
        for sub in ("model", "training", "parts"):
            os.makedirs(os.path.join(save.tmp, sub), exist_ok=True)
        files = {rank_file(p.tp_rank): save.weights,
                 os.path.join("training", f"optim_tp{p.tp_rank:02d}_dp{p.dp_cp_rank:02d}.safetensors"): save.moments,
                 os.path.join("training", f"rng_rank{p.rank:05d}.safetensors"): save.rng}
        files = {name: tensors for name, tensors in files.items() if tensors}
        for name, tensors in files.items():
            # streamed from the tensors' own memory: no second copy of a part, and the GIL free while it is written
            writer = StreamingWriter(os.path.join(save.tmp, name), [(k, t.dtype, tuple(t.shape)) for k, t in tensors.items()])
            for key, tensor in tensors.items():
                writer.write(key, tensor)
            writer.close()
            fsync(os.path.join(save.tmp, name))
        declared = os.path.join(save.tmp, "parts", f"rank_{p.rank:05d}.json")
        with open(declared + ".tmp", "w") as f:
            json.dump({name: os.path.getsize(os.path.join(save.tmp, name)) for name in files}, f)
            f.flush()
            os.fsync(f.fileno())
        os.rename(declared + ".tmp", declared)  # the part is durable once declared

    def _publish(self, save: Save) -> None:
        """Rank 0: the manifest once every rank's part is declared with its sizes, then the rename."""
        deadline = time.monotonic() + self.timeout_s
        while missing := self._missing_parts(save.tmp):
            if self._cancel.is_set():
                raise CheckpointError(f"{save.final}: abandoned while waiting for {missing}")
            if time.monotonic() > deadline:
                raise CheckpointError(f"{save.final}: {missing} not written within {self.timeout_s:.0f} s "
                                      "(parallel.timeout_minutes)")
            time.sleep(POLL_S)
        shutil.rmtree(os.path.join(save.tmp, "parts"))
        m = save.manifest
        if m["side_files_from"]:
            copy_side_files(m["side_files_from"], save.tmp)
        with open(os.path.join(save.tmp, "training", "state.json"), "w") as f:
            json.dump(m["state"], f, indent=2)
        with open(os.path.join(save.tmp, METADATA_FILE), "w") as f:  # last: what makes it a checkpoint
            json.dump(m["meta"], f, indent=2)
        publish(save.tmp, save.final)

    def _missing_parts(self, tmp: str) -> str:
        """Which ranks' parts are not yet declared, or not yet of their declared sizes ('' if none)."""
        missing = []
        for rank in range(self.parallel.world_size):
            try:
                with open(os.path.join(tmp, "parts", f"rank_{rank:05d}.json")) as f:
                    sizes = json.load(f)
                if all(os.path.getsize(os.path.join(tmp, name)) == size for name, size in sizes.items()):
                    continue
            except (OSError, ValueError):
                pass
            missing.append(rank)
        return f"the parts of rank(s) {', '.join(map(str, missing))}" if missing else ""
