"""The two-node SLURM cluster of tools/local_slurm.sh as the multi-node tests drive it."""

import os
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOCAL_SLURM = os.path.join(ROOT, "tools", "local_slurm.sh")


def read(path) -> str:
    """A job's log or a file it writes, as it is now (a log may end in the middle of a character)."""
    with open(path, errors="replace") as f:
        return f.read()


def skip_without_slurm():
    if subprocess.run(["bash", LOCAL_SLURM, "check"], capture_output=True, text=True).returncode != 0:
        pytest.skip("SLURM is not installed here (Debian: apt-get install slurm-wlm munge; .ci/run installs them)")


class Cluster:
    def __init__(self, directory: str):
        self.directory = directory
        self.env = {**os.environ, "SLURM_CONF": os.path.join(directory, "slurm.conf")}

    def run(self, *argv, check=True, **kwargs) -> str:
        done = subprocess.run(list(argv), env={**self.env, **kwargs.pop("env", {})}, capture_output=True, text=True,
                              timeout=120, **kwargs)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr}")
        return done.stdout

    def submit(self, script: str, log: str, sbatch_args=(), script_args=(), env: dict | None = None) -> str:
        """sbatch from the repository's root, as a user submits; the job's id."""
        out = self.run("sbatch", "--parsable", "-o", log, *sbatch_args, script, *script_args, env=env or {}, cwd=ROOT)
        return out.strip().split(";")[0]

    def state(self, job: str) -> str:
        """PENDING, RUNNING, COMPLETED, ... (scontrol keeps a finished job for MinJobAge)."""
        for word in self.run("scontrol", "show", "job", job, "--oneliner").split():
            if word.startswith("JobState="):
                return word.split("=", 1)[1]
        raise AssertionError(f"job {job}: no JobState")

    def wait(self, condition, timeout: float, what: str, poll: float = 0.2):
        deadline = time.time() + timeout
        while not condition():
            assert time.time() < deadline, f"not within {timeout:.0f} s: {what}"
            time.sleep(poll)
        return time.time()

    def finished(self, job: str) -> bool:
        return self.state(job) in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")
