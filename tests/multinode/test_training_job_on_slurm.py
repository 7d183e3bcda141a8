"""One training run as a 2 x 2 SLURM job (examples/slurm_redi.sbatch with CONFIG): a rank killed
(SIGKILL) on the second node ends the whole job step within the configured timeout with a message
naming the rank and the node, not a hang; the time limit's signal (SIGUSR1 to the batch shell, what
--signal=B:USR1@300 sends) stops every rank after the same step with one checkpoint. Either way the
job requeues itself and the requeued job resumes from the last complete checkpoint."""

import glob
import os
import re
import signal
import time

import pytest

from local_cluster import ROOT, read as _read

pytestmark = pytest.mark.slow  # end to end, minutes: the whole suite runs it, -m "not slow" leaves it out

TIMEOUT_MINUTES = 1


def _worker(job: str, node: str, local_rank: str) -> tuple[int, str]:
    """(pid, global rank) of a trainer process of ``job`` on ``node``: torchrun sets RANK in its workers."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
        except OSError:
            continue
        if (env.get(b"SLURM_JOB_ID") == job.encode() and env.get(b"SLURMD_NODENAME") == node.encode()
                and env.get(b"LOCAL_RANK") == local_rank.encode() and b"TORCHELASTIC_RUN_ID" in env):
            return int(pid), env[b"RANK"].decode()
    return 0, ""


def _submit(cluster, inputs, tmp_path):
    """The job, its run directory and its log."""
    data, model = inputs
    out, log = tmp_path / "run", str(tmp_path / "job.log")
    config = os.path.join(ROOT, "examples", "configs", "toy", "qwen2.5-math-1.5b_redi.yaml")
    env = {"CONFIG": config, "MODEL": model, "DATA": data, "OUT": str(out), "NPROC": "2", "OMP_NUM_THREADS": "1"}
    overrides = ["--train.epochs", "4", "--checkpoint.every", "4", "--checkpoint.keep", "3", "--data.global_batch", "8",
                 "--parallel.timeout_minutes", str(TIMEOUT_MINUTES), "--train.progress", "false"]
    job = cluster.submit("examples/slurm_redi.sbatch", log, ["--nodes", "2"], overrides, env=env)
    cluster.wait(lambda: glob.glob(str(out / "checkpoints" / "step_*")) or cluster.finished(job), 300,
                 "a first checkpoint")
    assert not cluster.finished(job), _read(log)[-3000:]
    return job, out, log


def _resumed_and_done(cluster, job, log, step):
    cluster.wait(lambda: cluster.finished(job), 600, "the requeued job's end", poll=1)
    text = _read(log)
    assert "(restart 1)" in text and text.count("== done,") == 1, text[-3000:]
    assert re.search(rf"resumed from \S+step_0*{step} \(step {step}\)", text.split("(restart 1)", 1)[1])


def test_a_rank_killed_on_one_node_ends_the_job_and_the_requeued_job_resumes(slurm_cluster, tiny_run_inputs,
                                                                                tmp_path):
    job, out, log = _submit(slurm_cluster, tiny_run_inputs, tmp_path)
    checkpoints = str(out / "checkpoints" / "step_*")
    pid, rank = _worker(job, "n2", "1")
    assert pid, _read(log)[-3000:]
    os.kill(pid, signal.SIGKILL)
    killed = time.time()
    ended = slurm_cluster.wait(lambda: "requeueing job" in _read(log) or slurm_cluster.finished(job),
                               60 * TIMEOUT_MINUTES + 60, "the job step's end after a lost rank")
    complete = sorted(glob.glob(checkpoints))[-1]  # what the requeued job must resume from
    text = _read(log)
    assert "failed (exit 1): requeueing job" in text, text[-3000:]
    assert re.search(rf"rank\s*:\s*{rank} \(local_rank: 1\)", text) and "exitcode  : -9" in text
    assert "megatron_redi.slurm: node n2 (127.0.0.1) failed" in text
    print(f"\nrank {rank} killed on n2: the job step ended {ended - killed:.1f} s later")

    _resumed_and_done(slurm_cluster, job, log, int(complete.rsplit("_", 1)[1]))
    assert (out / "hf" / "config.json").exists()


def test_the_time_limits_signal_stops_every_rank_with_a_checkpoint_and_requeues(slurm_cluster, tiny_run_inputs,
                                                                                  tmp_path):
    job, out, log = _submit(slurm_cluster, tiny_run_inputs, tmp_path)
    slurm_cluster.run("scancel", "--batch", "--signal=USR1", job)  # what --signal=B:USR1@300 sends
    slurm_cluster.wait(lambda: "requeueing job" in _read(log) or slurm_cluster.finished(job), 120,
                       "the job's stop and requeue")
    text = _read(log)
    assert "the time limit is near (SIGUSR1): stopping with a checkpoint" in text
    assert "stopped with a checkpoint: requeueing job" in text, text[-3000:]
    stops = re.findall(r"SIGTERM after step (\d+): checkpoint \S+ written", text)
    assert len(stops) == 4 and len(set(stops)) == 1, stops  # every rank, after the same step
    assert os.path.isdir(out / "checkpoints" / f"step_{int(stops[0]):08d}")
    _resumed_and_done(slurm_cluster, job, log, int(stops[0]))
