"""Several nodes under SLURM: one torchrun per node, joined by torchrun's c10d rendezvous.

    srun --ntasks-per-node 1 python -m megatron_redi.slurm torchrun --nproc-per-node P ...
    python -m megatron_redi.slurm --every-node COMMAND...      (the same srun line, from a batch script)

runs the command on every node of the job step with torchrun's rendezvous filled in from SLURM's
environment (``PET_*`` variables, which torchrun reads as defaults: flags on the command line still win):
the step's node count, a c10d rendezvous on the first node's ``NodeAddr`` (``scontrol show node``:
SLURM's node names need not resolve as hosts), the job and step as its id, and this node's address
as the one torchrun advertises. ``RDZV_PORT`` picks the port (default 29400, torchrun's own).

On this node the wrapper also keeps two promises the recipe and examples/slurm_redi.sbatch rely on:

- **A stop is told apart from a failure.** SLURM delivers a signal (``scancel --signal=TERM``, a
  preemption, srun passing on the one it got) to every process of the step: torchrun and each
  worker get it directly, and the workers end their step, write a checkpoint and exit. The wrapper
  records that it came and exits 3 (stopped; the same command continues) rather than torchrun's 1.
- **No worker is cut off.** The wrapper is a subreaper: workers that outlive torchrun (a second
  signal cuts its grace short) are reparented to it and waited for, so the step, and SLURM's kill
  of whatever is left in it, ends only when every worker has finished its checkpoint.

A failed node says which it is (its SLURM name and address) under torchrun's report of the failed rank.
srun runs without --kill-on-bad-exit: it would count a stopped node's exit 3 as a failure and kill
the others in the middle of their checkpoint. A rank lost on one node ends the ranks elsewhere
through their next collective instead: at once where the connection drops (gloo), within
parallel.timeout_minutes where it hangs.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

from .cli import STOPPED_EXIT

DEFAULT_RDZV_PORT = 29400
PR_SET_CHILD_SUBREAPER = 36


class SlurmError(RuntimeError):
    """SLURM's tools did not answer as expected."""


def in_job(env=os.environ) -> bool:
    """Whether this process runs inside a SLURM job (a batch script or an salloc shell)."""
    return bool(env.get("SLURM_JOB_ID"))


def _scontrol(*args: str) -> str:
    try:
        done = subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        raise SlurmError(f"scontrol {' '.join(args)}: {e}") from None
    if done.returncode != 0:
        raise SlurmError(f"scontrol {' '.join(args)}: {done.stderr.strip() or f'exit {done.returncode}'}")
    return done.stdout


def hostnames(nodelist: str) -> list[str]:
    """SLURM's compressed node list (``n[1-2],gpu7``) expanded, in order."""
    return _scontrol("show", "hostnames", nodelist).split()


def node_address(name: str) -> str:
    """The address SLURM reaches node ``name`` at: its NodeAddr (the name itself where none is set)."""
    for word in _scontrol("show", "node", name, "--oneliner").split():
        if word.startswith("NodeAddr="):
            return word.split("=", 1)[1]
    raise SlurmError(f"scontrol show node {name}: no NodeAddr")


def srun_prefix(env=os.environ) -> list[str]:
    """What runs a command once per node of the job, through this module's wrapper."""
    nodes = env.get("SLURM_JOB_NUM_NODES") or env["SLURM_NNODES"]
    return ["srun", "--nodes", nodes, "--ntasks-per-node", "1", sys.executable, "-m", "megatron_redi.slurm"]


def stop_job_steps(env=os.environ) -> None:
    """SIGTERM to every process of this job's steps, not to the batch script (scancel's default):
    the graceful stop. A SIGTERM to srun itself would make it kill its step at once."""
    subprocess.run(["scancel", "--signal=TERM", env["SLURM_JOB_ID"]], timeout=60, check=False)


def rendezvous(env=os.environ) -> dict[str, str]:
    """torchrun's rendezvous for this job step, as the PET_* variables torchrun reads."""
    nodes = env.get("SLURM_STEP_NODELIST") or env["SLURM_JOB_NODELIST"]
    count = env.get("SLURM_STEP_NUM_NODES") or env.get("SLURM_JOB_NUM_NODES") or env["SLURM_NNODES"]
    port = env.get("RDZV_PORT") or str(DEFAULT_RDZV_PORT)
    run = f"{env['SLURM_JOB_ID']}.{env.get('SLURM_STEP_ID', '0')}"
    me = env.get("SLURMD_NODENAME")
    endpoint = f"{node_address(hostnames(nodes)[0])}:{port}"
    return {"PET_NNODES": count, "PET_RDZV_BACKEND": "c10d", "PET_RDZV_ENDPOINT": endpoint, "PET_RDZV_ID": run,
            **({"PET_LOCAL_ADDR": node_address(me)} if me else {})}


def _become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:  # Linux only, as SLURM is
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def _reap_all() -> None:
    """Wait for every descendant left (reparented here): until there is no child at all."""
    while True:
        try:
            os.wait()
        except ChildProcessError:
            return


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    if argv[0] == "--every-node":  # from the batch script: srun runs this wrapper on each node
        if not in_job() or len(argv) < 2:
            print("megatron_redi.slurm --every-node COMMAND...: inside a SLURM job only", file=sys.stderr)
            return 2
        prefix = srun_prefix()
        os.execvp(prefix[0], prefix + argv[1:])
    node = os.environ.get("SLURMD_NODENAME", "?")
    try:
        env = {**os.environ, **{k: v for k, v in rendezvous().items() if k not in os.environ}}
    except (KeyError, SlurmError) as e:
        print(f"megatron_redi.slurm: node {node}: no rendezvous from SLURM's environment ({e}); run it under srun "
              "inside a job", file=sys.stderr)
        return 2
    address = env.get("PET_LOCAL_ADDR", "?")
    if env.get("SLURM_NODEID", "0") == "0":
        print(f"megatron_redi.slurm: {env['PET_NNODES']} node(s), rendezvous c10d at {env['PET_RDZV_ENDPOINT']} "
              f"(id {env['PET_RDZV_ID']})", file=sys.stderr, flush=True)
    received: list[str] = []

    def record(signum, frame):  # every process of the step got it too: nothing to pass on
        received.append(signal.Signals(signum).name)

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(s, record)
    _become_subreaper()
    code = subprocess.Popen(argv, env=env).wait()
    _reap_all()
    if received and code != 0:
        print(f"megatron_redi.slurm: node {node} ({address}): stopped by {received[0]} (its command exited {code})",
              file=sys.stderr, flush=True)
        return STOPPED_EXIT
    if code != 0:
        print(f"megatron_redi.slurm: node {node} ({address}) failed: its command exited {code}; torchrun's report "
              "above names the rank that failed first", file=sys.stderr, flush=True)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
