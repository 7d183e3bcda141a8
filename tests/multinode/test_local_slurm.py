"""tools/local_slurm.sh's cluster and megatron_redi.slurm, the wrapper srun runs on every node:
the rendezvous it gives torchrun, a stop told apart from a failure, no process left behind."""

import os
import subprocess
import sys
import time

from local_cluster import LOCAL_SLURM, Cluster, skip_without_slurm

WRAPPER = [sys.executable, "-m", "megatron_redi.slurm"]


def test_a_two_node_job_runs_one_task_on_each_node(slurm_cluster):
    out = slurm_cluster.run("srun", "--nodes", "2", "--ntasks-per-node", "1", "bash", "-c",
                            'echo "$SLURM_PROCID $SLURMD_NODENAME"')
    assert sorted(out.split("\n")[:-1]) == ["0 n1", "1 n2"]


def test_the_wrapper_gives_torchrun_the_rendezvous_on_the_first_nodes_address(slurm_cluster):
    out = slurm_cluster.run("srun", "--nodes", "2", "--ntasks-per-node", "1", *WRAPPER, "bash", "-c",
                            'echo "$SLURMD_NODENAME $PET_NNODES $PET_RDZV_BACKEND $PET_RDZV_ENDPOINT $PET_LOCAL_ADDR '
                            '$PET_RDZV_ID"', env={"RDZV_PORT": "29611"})
    lines = sorted(out.split("\n")[:-1])
    job_step = lines[0].split()[-1]
    assert lines == [f"n1 2 c10d 127.0.0.1:29611 127.0.0.1 {job_step}", f"n2 2 c10d 127.0.0.1:29611 127.0.0.1 {job_step}"]


def test_a_signal_is_a_stop_and_a_failure_names_its_node(slurm_cluster, tmp_path):
    # the command ignores the signal as a trainer ends its step: exit 1 is torchrun's answer to it
    command = 'trap "sleep 1; exit 1" TERM; touch "$READY.$SLURMD_NODENAME"; sleep 60 & wait'
    step = subprocess.Popen(["srun", "--nodes", "2", "--ntasks-per-node", "1", "--job-name", "stop-test", *WRAPPER,
                             "bash", "-c", command], env={**slurm_cluster.env, "READY": str(tmp_path / "ready")},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    slurm_cluster.wait(lambda: len(list(tmp_path.glob("ready.*"))) == 2, 60, "both tasks started")
    job = slurm_cluster.run("squeue", "-h", "-n", "stop-test", "-o", "%i").strip()
    slurm_cluster.run("scancel", "--signal=TERM", job)
    _, err = step.communicate(timeout=60)
    assert step.returncode == 3, err
    assert "node n1 (127.0.0.1): stopped by SIGTERM" in err and "node n2 (127.0.0.1): stopped by SIGTERM" in err

    failed = subprocess.run(["srun", "--nodes", "2", "--ntasks-per-node", "1", *WRAPPER, "bash",
                             "-c", '[ "$SLURMD_NODENAME" = n2 ] && exit 7; exit 0'], env=slurm_cluster.env,
                            capture_output=True, text=True, timeout=60)
    assert failed.returncode == 7
    assert "node n2 (127.0.0.1) failed: its command exited 7" in failed.stderr and "node n1" not in failed.stderr


def test_workers_that_outlive_their_launcher_are_waited_for(slurm_cluster, tmp_path):
    done = tmp_path / "done"
    start = time.time()
    slurm_cluster.run("srun", "--nodes", "1", *WRAPPER, "bash", "-c", f'(sleep 2; touch {done}) & exit 0')
    assert done.exists() and time.time() - start >= 2  # SLURM would have killed it at the step's end


def test_stop_stops_exactly_the_daemons_it_started(tmp_path):
    """A second cluster beside the session's: stopped, its four daemons are gone, nothing else is."""
    skip_without_slurm()
    bystander = subprocess.Popen(["sleep", "300"])
    cluster = Cluster(str(tmp_path / "cluster"))
    try:
        started = subprocess.run(["bash", LOCAL_SLURM, "start", cluster.directory], capture_output=True, text=True,
                                 timeout=120)
        assert started.returncode == 0, started.stderr
        assert started.stdout.strip() == f"export SLURM_CONF={cluster.directory}/slurm.conf"
        with open(os.path.join(cluster.directory, "pids")) as f:
            daemons = {name: int(pid) for name, pid in (line.split() for line in f)}
        assert sorted(daemons) == ["munged", "slurmctld", "slurmd-n1", "slurmd-n2"]
        assert "n1 idle" in cluster.run("sinfo", "-h", "-N", "-o", "%N %t")
    finally:
        subprocess.run(["bash", LOCAL_SLURM, "stop", cluster.directory], timeout=180, check=True)
    try:
        for pid in daemons.values():
            assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
        assert bystander.poll() is None  # untouched
    finally:
        bystander.kill()
        bystander.wait()
