"""Preemption: SIGTERM to one rank of a TP=2 run stops every rank after the same step with a
checkpoint, and the resumed run reproduces the uninterrupted one bit for bit."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KEYS = ("loss", "grad_norm", "update_norm", "logps/chosen", "lr")


def _command(data, model, out):
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "megatron_redi.train",
            "--model.path", model, "--model.dtype", "fp32", "--data.path", data, "--parallel.tensor_parallel", "2",
            "--data.global_batch", "8", "--data.micro_batch_tokens", "512", "--optim.lr", "1e-3",
            "--train.epochs", "3", "--train.max_steps", "30", "--train.output_dir", str(out),
            "--train.progress", "false", "--train.tensorboard", "false"]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT, "PYTHONWARNINGS": "ignore"}


def _steps(out):
    path = os.path.join(out, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.endswith("\n")]


def _workers(pid):
    """The worker processes torchrun started (its children that run the trainer)."""
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in found]


@pytest.mark.slow
def test_sigterm_to_one_rank_checkpoints_and_resumes_bit_for_bit(tiny_run_inputs, tmp_path):
    data, model = tiny_run_inputs
    full, cut = tmp_path / "full", tmp_path / "cut"
    subprocess.run(_command(data, model, full), env=_env(), check=True, capture_output=True)

    proc = subprocess.Popen(_command(data, model, cut), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    deadline = time.time() + 120
    while len(_steps(cut)) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    workers = _workers(proc.pid)
    assert len(workers) == 2, workers
    os.kill(workers[-1], signal.SIGTERM)  # one rank only: the ranks must agree to stop together
    log, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "SIGTERM after step" in log and "run the same command again to resume" in log, log[-3000:]
    stopped_at = _steps(cut)[-1]["step"]
    assert 2 <= stopped_at < 30
    assert os.path.isdir(cut / "checkpoints" / f"step_{stopped_at:08d}")

    done = subprocess.run(_command(data, model, cut), env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    want, got = _steps(full), _steps(cut)
    assert [r["step"] for r in got] == list(range(1, 31))
    for x, y in zip(want, got):
        for key in KEYS:
            assert x[key] == y[key], (x["step"], key)


def test_a_second_run_in_a_busy_directory_stops_at_once(tiny_run_inputs, tmp_path):
    """A resubmitted job whose predecessor still writes (its preemption checkpoint, say) must not
    interleave with it: the directory's lock is held for the run's life."""
    from megatron_redi.parallel import initialize
    from megatron_redi.training.checkpointing import lock_run_directory

    data, model = tiny_run_inputs
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\n"
                               "from megatron_redi.parallel import initialize\n"
                               "from megatron_redi.training.checkpointing import lock_run_directory\n"
                               f"lock = lock_run_directory({str(out)!r}, initialize())\n"
                               "print('held', flush=True)\ntime.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = subprocess.run([sys.executable, "-m", "megatron_redi.train", "--model.path", model, "--data.path", data,
                               "--train.output_dir", str(out), "--train.max_steps", "1"], capture_output=True,
                              text=True, env=_env())
        assert proc.returncode == 2 and f"another run (process {holder.pid}) is writing this directory" in proc.stderr
        assert not os.path.exists(out / "checkpoints") and not os.path.exists(out / "metrics.jsonl")
    finally:
        holder.kill()
        holder.wait()
    lock = lock_run_directory(str(out), initialize())  # the kernel released the killed holder's lock
    assert lock is not None
    lock.close()
