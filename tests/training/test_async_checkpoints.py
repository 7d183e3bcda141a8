"""Checkpoints written while training goes on (checkpoint_writer.py): a kill -9 at every phase of a
save, a SIGTERM with a save in flight, a full disk in the background write and ranks writing at
different speeds all leave the last complete checkpoint, from which the run resumes bit for bit."""

import errno
import os
import signal
import subprocess
import sys
import time

import pytest
from multirank import run_ranks
from test_trainer import config, metrics

from megatron_redi.checkpoint.hf_mapping import CheckpointError
from megatron_redi.checkpoint.safetensors_io import StreamingWriter
from megatron_redi.training import Trainer, TrainingStopped, checkpointing
from megatron_redi.training.checkpoint_writer import CheckpointWriter

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KEYS = ("loss", "grad_norm", "update_norm", "logps/chosen", "lr")
SIX_STEPS = ("--train.max_steps", "6", "--checkpoint.every", "2")

# A run that kills itself (SIGKILL: no handler, no cleanup) in one phase of the save of step 4.
KILLED_IN = """
import os, signal, sys
from megatron_redi.checkpoint import safetensors_io
from megatron_redi.training import Trainer, load_config
from megatron_redi.training import checkpoint_writer as W

phase, args = sys.argv[1], sys.argv[2:]
saving_step_4 = False
calls = 0

def die_in(cls_or_module, name, after=0):
    real = getattr(cls_or_module, name)
    def wrapped(*a, **k):
        global calls
        if saving_step_4:
            calls += 1
            if calls > after:
                os.kill(os.getpid(), signal.SIGKILL)
        return real(*a, **k)
    setattr(cls_or_module, name, wrapped)

start = W.CheckpointWriter.start
def start_and_mark(self, step, *a, **k):
    global saving_step_4
    saving_step_4 = step == 4
    return start(self, step, *a, **k)
W.CheckpointWriter.start = start_and_mark

{"copy": lambda: die_in(W.HostCopies, "copy", after=2),                 # some tensors copied
 "write": lambda: die_in(safetensors_io.StreamingWriter, "write", after=3),  # a rank file half written
 "manifest": lambda: die_in(W, "copy_side_files"),                     # every part on disk, no manifest
 "rename": lambda: die_in(W, "publish"),                               # the manifest written, not renamed
 }[phase]()
Trainer(load_config(None, args)).run()
"""


def _args(data, model, out, *more):
    return ["--model.path", model, "--model.dtype", "fp32", "--data.path", data, "--data.global_batch", "8",
            "--data.micro_batch_tokens", "512", "--optim.lr", "1e-3", "--train.output_dir", str(out),
            "--train.progress", "false", "--train.tensorboard", "false", *more]


@pytest.fixture(scope="module")
def full_run(tiny_run_inputs, tmp_path_factory):
    """Six steps never interrupted, with a save every two."""
    data, model = tiny_run_inputs
    out = tmp_path_factory.mktemp("full")
    Trainer(config(data, model, out, *SIX_STEPS)).run()
    return out


def _equals_full_run(full, out):
    want, got = metrics(full), metrics(out)
    assert [r["step"] for r in got] == list(range(1, 7))
    for x, y in zip(want, got):
        for key in KEYS:
            assert x[key] == y[key], (x["step"], key)


@pytest.mark.parametrize("phase", ["copy", "write", "manifest", "rename"])
def test_a_kill_at_any_phase_of_a_save_resumes_from_the_last_complete_one(tiny_run_inputs, full_run, tmp_path,
                                                                          phase):
    data, model = tiny_run_inputs
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    killed = subprocess.run([sys.executable, "-c", KILLED_IN, phase, *_args(data, model, out, *SIX_STEPS)],
                            env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    ckpts = out / "checkpoints"
    assert sorted(os.listdir(ckpts)) == ([".step_00000004.tmp"] if phase != "copy" else []) + ["step_00000002"]
    assert checkpointing.is_resumable(str(ckpts / "step_00000002"))

    trainer = Trainer(config(data, model, out, *SIX_STEPS))
    assert trainer.step == 2 and not (ckpts / ".step_00000004.tmp").exists()  # the leftovers removed
    trainer.run()
    _equals_full_run(full_run, out)


def test_a_sigterm_with_a_save_in_flight_finishes_it_then_saves_and_stops(tiny_run_inputs, full_run, tmp_path,
                                                                          monkeypatch):
    data, model = tiny_run_inputs
    out, seen = tmp_path / "run", {}
    write_part, train_step = CheckpointWriter._write_part, Trainer.train_step

    def slow_disk(self, save):
        time.sleep(1.0)
        write_part(self, save)

    def signalled_at_step_3(self, plan):
        if self.step == 2:  # step 2's save has just started: it is still being written
            seen["in_flight"] = self.checkpoints.in_flight is not None
            os.kill(os.getpid(), signal.SIGTERM)
        return train_step(self, plan)

    monkeypatch.setattr(CheckpointWriter, "_write_part", slow_disk)
    monkeypatch.setattr(Trainer, "train_step", signalled_at_step_3)
    with pytest.raises(TrainingStopped, match=r"SIGTERM after step 3: checkpoint .*step_00000003 written"):
        Trainer(config(data, model, out, *SIX_STEPS)).run()
    assert seen == {"in_flight": True}
    assert [step for step, _ in checkpointing.checkpoint_dirs(str(out / "checkpoints"))] == [3, 2]
    assert all(checkpointing.is_resumable(str(out / "checkpoints" / f"step_0000000{s}")) for s in (2, 3))

    monkeypatch.undo()
    Trainer(config(data, model, out, *SIX_STEPS)).run()
    _equals_full_run(full_run, out)


def test_a_full_disk_in_the_background_write_stops_the_run_and_keeps_the_previous(tiny_run_inputs, tmp_path,
                                                                                   monkeypatch):
    data, model = tiny_run_inputs
    out = tmp_path / "run"
    write = StreamingWriter.write

    def full_at_step_4(self, name, tensor):
        if "step_00000004" in self.path and "optim" in self.path:  # the weights written, the moments not
            raise OSError(errno.ENOSPC, "No space left on device", self.path)
        write(self, name, tensor)

    monkeypatch.setattr(StreamingWriter, "write", full_at_step_4)
    with pytest.raises(CheckpointError, match=r"step_00000004: the checkpoint could not be written \(.*No space left "
                                              "on device.*older checkpoints are intact"):
        Trainer(config(data, model, out, *SIX_STEPS)).run()
    assert metrics(out)[-1]["step"] == 4  # stopped at the end of the next step, before logging it
    assert os.listdir(out / "checkpoints") == ["step_00000002"]
    assert checkpointing.is_resumable(str(out / "checkpoints" / "step_00000002"))


def _same_checkpoints(run_a, run_b):
    for step in ("step_00000004", "step_00000006"):
        a, b = run_a / "checkpoints" / step, run_b / "checkpoints" / step
        files = sorted(os.path.relpath(os.path.join(d, f), a) for d, _, names in os.walk(a) for f in names)
        assert files == sorted(os.path.relpath(os.path.join(d, f), b) for d, _, names in os.walk(b) for f in names)
        for name in files:
            if name != os.path.join("training", "state.json"):  # holds the config, async_save included
                assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_a_synchronous_save_writes_the_same_files(tiny_run_inputs, full_run, tmp_path):
    data, model = tiny_run_inputs
    Trainer(config(data, model, tmp_path, *SIX_STEPS, "--checkpoint.async_save", "false")).run()
    _equals_full_run(full_run, tmp_path)
    _same_checkpoints(full_run, tmp_path)


@pytest.mark.cuda
def test_on_a_gpu_the_copy_is_pinned_and_the_files_are_the_synchronous_ones(tiny_run_inputs, tmp_path):
    data, model = tiny_run_inputs
    trainer = Trainer(config(data, model, tmp_path / "async", *SIX_STEPS))
    assert trainer.parallel.device.type == "cuda" and trainer.checkpoints.copies.pinned
    trainer.run()
    Trainer(config(data, model, tmp_path / "sync", *SIX_STEPS, "--checkpoint.async_save", "false")).run()
    _same_checkpoints(tmp_path / "async", tmp_path / "sync")


def _slow_rank_run(data, model, out, slow_rank, *overrides):
    write_part = CheckpointWriter._write_part

    def slow(self, save):
        if self.parallel.rank == slow_rank:
            time.sleep(0.5)
        write_part(self, save)

    CheckpointWriter._write_part = slow
    Trainer(config(data, model, out, *overrides)).run()


@pytest.mark.parametrize("slow_rank", [0, 1])
def test_two_ranks_writing_at_different_speeds(tiny_run_inputs, tmp_path, slow_rank):
    """ZeRO-1 on 2 DP ranks: each writes its own slice of the moments; whichever is slower, the
    checkpoint is published only once both are on disk, and a resume from it is exact."""
    data, model = tiny_run_inputs
    zero1 = ("--parallel.zero1", "true")
    run_ranks(2, _slow_rank_run, data, model, tmp_path / "full", slow_rank, *zero1, *SIX_STEPS)
    kept = [step for step, _ in checkpointing.checkpoint_dirs(str(tmp_path / "full" / "checkpoints"))]
    assert kept == [6, 4, 2]
    for step in kept:
        training = tmp_path / "full" / "checkpoints" / f"step_{step:08d}" / "training"
        assert {"optim_tp00_dp00.safetensors", "optim_tp00_dp01.safetensors", "rng_rank00001.safetensors"} <= set(
            os.listdir(training))
    cut = tmp_path / "cut"  # as if stopped after step 3: resumes from the checkpoint of step 2
    os.makedirs(cut / "checkpoints")
    os.rename(tmp_path / "full" / "checkpoints" / "step_00000002", cut / "checkpoints" / "step_00000002")
    run_ranks(2, _slow_rank_run, data, model, cut, slow_rank, *zero1, *SIX_STEPS)
    want, got = metrics(tmp_path / "full"), metrics(cut)
    assert [r["step"] for r in got] == [3, 4, 5, 6]
    for x, y in zip(want[2:], got):
        for key in KEYS:
            assert x[key] == y[key], (x["step"], key)


def test_the_host_copy_is_what_the_memory_plan_counts(tiny_run_inputs, tmp_path):
    from megatron_redi.model.memory import host_copy_bytes

    data, model = tiny_run_inputs
    trainer = Trainer(config(data, model, tmp_path / "a", "--train.max_steps", "2", "--checkpoint.every", "1"))
    reserved = trainer.checkpoints.copies.nbytes  # taken at the start: no save allocates
    trainer.run()
    assert reserved == trainer.checkpoints.copies.nbytes == host_copy_bytes(trainer.model.cfg, 1, 1, False) > 0
    # only the final save, which the run waits for anyway: written from the live tensors, no copy
    assert Trainer(config(data, model, tmp_path / "b", "--train.max_steps", "2")).checkpoints.copies is None


def test_a_write_failing_while_the_ranks_agree_is_not_taken_for_a_completion(tmp_path, monkeypatch):
    """The writer thread may end between the two agreements of a step boundary: its failure must
    be read at the next boundary, never as a completion."""
    import threading

    from megatron_redi.parallel import ParallelState, collectives
    from megatron_redi.training.checkpoint_writer import Save

    writer = CheckpointWriter(str(tmp_path), ParallelState(), True, 60.0)
    save = writer.in_flight = Save(1, str(tmp_path / "step_00000001"), str(tmp_path / ".step_00000001.tmp"))
    go = threading.Event()

    def fails_when_told():
        go.wait()
        save.error = OSError(errno.ENOSPC, "No space left on device")

    writer._thread = threading.Thread(target=fails_when_told)
    writer._thread.start()
    agree, calls = collectives.any_rank, []

    def any_rank(parallel, flag):
        calls.append(flag)
        if len(calls) == 1:  # the write fails between the first agreement and the second
            go.set()
            writer._thread.join()
        return agree(parallel, flag)

    monkeypatch.setattr(collectives, "any_rank", any_rank)
    assert writer.poll() is None and writer.in_flight is save
    with pytest.raises(CheckpointError, match="step_00000001: the checkpoint could not be written .*No space left"):
        writer.poll()
