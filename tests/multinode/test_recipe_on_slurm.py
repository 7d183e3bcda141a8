"""The toy recipe under SLURM on 2 nodes x 2 processes (gloo), through examples/slurm_redi.sbatch as a
user submits it: a SIGTERM (scancel --signal=TERM) in the middle of the REDI stage stops every rank
after the same step with one checkpoint, the job requeues itself, the requeued job continues, and the
finished run equals an uninterrupted one-node run of the same world size (1 x 4, no SLURM) from the
same SFT model: every REDI step's loss and gradient norm, the best step, the final numbers and the
table. (The one-node run starts stage 2 from the two-node run's SFT export, SFT=DIR, to spare CI a
second stage 1.)"""

import glob
import json
import os
import re
import subprocess
import time

import pytest

from local_cluster import ROOT, read as _read

pytestmark = pytest.mark.slow  # end to end, minutes: the whole suite runs it, -m "not slow" leaves it out

RECIPE_VARIABLES = ("MODEL", "RAW", "BENCH", "OUT", "NGPU", "NPROC", "SFT", "STAGES", "STUDENT", "TOKENIZER", "DRY_RUN",
                    "TOY", "WORKERS", "CONFIG", "DATA")


def _env(**values):
    env = {k: v for k, v in os.environ.items() if k not in RECIPE_VARIABLES}
    return {**env, **{k: str(v) for k, v in values.items()}}


def _losses(run):
    with open(os.path.join(run, "metrics.jsonl")) as f:
        return [(r["step"], r["loss"], r.get("grad_norm")) for r in map(json.loads, f) if "loss" in r]


def _steps_logged(run):
    path = os.path.join(run, "metrics.jsonl")
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return max([json.loads(line)["step"] for line in f if line.endswith("\n")] or [0])


@pytest.fixture(scope="module")
def runs(slurm_cluster, tmp_path_factory):
    """(the one-node run's OUT, the SLURM run's OUT, its job log, the timings)"""
    root = tmp_path_factory.mktemp("recipe")
    out, log = root / "two_nodes", str(root / "job.log")
    job = slurm_cluster.submit("examples/slurm_redi.sbatch", log, ["--nodes", "2"],
                               env=_env(TOY=1, NPROC=2, OUT=out))
    first_checkpoint = str(out / "redi" / "checkpoints" / "step_*")
    slurm_cluster.wait(lambda: glob.glob(first_checkpoint) or slurm_cluster.finished(job), 900,
                       "the REDI stage's first checkpoint")
    assert not slurm_cluster.finished(job), _read(log)[-3000:]
    signalled = time.time()
    slurm_cluster.run("scancel", "--signal=TERM", job)
    stopped = slurm_cluster.wait(lambda: "requeueing job" in _read(log), 300, "the job's stop and requeue")
    checkpointed = os.path.getmtime(max(glob.glob(first_checkpoint)))
    restarted = slurm_cluster.wait(lambda: "(restart 1)" in _read(log), 300, "the requeued job's start")
    step = int(re.search(r"after step (\d+): checkpoint", _read(log)).group(1))
    resumed = slurm_cluster.wait(lambda: _steps_logged(out / "redi") > step, 300, "a step after the requeue")
    slurm_cluster.wait(lambda: slurm_cluster.finished(job), 900, "the requeued job's end", poll=1)
    timings = {"signal to checkpoint (s)": checkpointed - signalled, "signal to requeue (s)": stopped - signalled,
               "requeued job's start to its first new step logged (s)": resumed - restarted}
    print(f"\ntwo-node toy recipe, job {job}: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))

    one_node = root / "one_node"
    done = subprocess.run(["bash", os.path.join(ROOT, "examples", "run_redi_1.5b.sh")],
                          env=_env(TOY=1, NGPU=4, OUT=one_node, SFT=out / "sft" / "hf"), capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return one_node, out, _read(log), step


def test_the_job_stops_with_one_checkpoint_requeues_and_finishes(runs):
    _, _, log, step = runs
    assert log.count("== done,") == 1, log[-3000:]
    assert "stopped with a checkpoint: requeueing job" in log and "(restart 1)" in log
    stops = re.findall(r"after step (\d+): checkpoint \S+ written", log)
    assert stops == [str(step)] * 4  # every rank, after the same step
    assert "[3/6] redi: continuing" in log and re.search(rf"resumed from \S+step_0*{step} \(step {step}\)", log)
    assert "[2/6] sft: done before, kept" in log.split("(restart 1)", 1)[1]
    assert log.count("rendezvous c10d at 127.0.0.1:") >= 5  # training and evaluation ran on both nodes


def test_the_requeued_run_equals_the_uninterrupted_one_node_run(runs):
    one_node, two_nodes, _, _ = runs
    assert len(_losses(two_nodes / "redi")) == 228 and _losses(two_nodes / "redi") == _losses(one_node / "redi")
    best = [json.loads(_read(run / "redi_select" / "summary.json"))["best"] for run in (one_node, two_nodes)]
    assert best[0]["step"] == best[1]["step"] and best[0]["score"] == best[1]["score"]
    final = [json.loads(_read(run / "redi_final" / "summary.json"))["checkpoints"][0]["benchmarks"]
             for run in (one_node, two_nodes)]
    assert final[0] == final[1]
    assert _read(one_node / "table" / "table.md") == _read(two_nodes / "table" / "table.md")


def test_the_time_limits_signal_stops_the_recipe_s_stage_through_slurm(runs, slurm_cluster, tmp_path):
    """SIGUSR1 to the batch shell (what --signal=B:USR1@300 sends) reaches the recipe, which stops its
    training stage through SLURM (a SIGTERM to srun would kill the step): one checkpoint, requeued,
    resumed, and the stage's losses those of the uninterrupted stage."""
    _, two_nodes, _, _ = runs
    out, log = tmp_path / "run", str(tmp_path / "job.log")
    job = slurm_cluster.submit("examples/slurm_redi.sbatch", log, ["--nodes", "2"],
                               env=_env(TOY=1, NPROC=2, OUT=out, STAGES="data,redi", SFT=two_nodes / "sft" / "hf"))
    slurm_cluster.wait(lambda: glob.glob(str(out / "redi" / "checkpoints" / "step_*")) or slurm_cluster.finished(job),
                       300, "the REDI stage's first checkpoint")
    slurm_cluster.run("scancel", "--batch", "--signal=USR1", job)
    slurm_cluster.wait(lambda: slurm_cluster.finished(job) and "(restart 1)" in _read(log), 600, "the requeued job's end",
                       poll=1)
    text = _read(log)
    assert "the time limit is near (SIGUSR1): stopping with a checkpoint" in text, text[-3000:]
    stops = re.findall(r"SIGTERM after step (\d+): checkpoint \S+ written", text)
    assert len(stops) == 4 and len(set(stops)) == 1, stops
    assert "stopped with a checkpoint: requeueing job" in text and "forcing job termination" not in text
    assert text.count("== done,") == 1 and _losses(out / "redi") == _losses(two_nodes / "redi")
