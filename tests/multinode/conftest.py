"""A real two-node SLURM cluster on this machine (tools/local_slurm.sh), started once for the tests
that need it and stopped, exactly the processes it started, however the session ends."""

import signal
import subprocess

import pytest

from local_cluster import LOCAL_SLURM, Cluster, skip_without_slurm


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")  # pytest then tears the fixtures down


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    skip_without_slurm()
    directory = str(tmp_path_factory.mktemp("slurm"))
    previous = signal.signal(signal.SIGTERM, _interrupt)  # a terminated session stops the daemons too
    try:
        started = subprocess.run(["bash", LOCAL_SLURM, "start", directory], capture_output=True, text=True, timeout=120)
        assert started.returncode == 0, started.stderr
        yield Cluster(directory)
    finally:
        subprocess.run(["bash", LOCAL_SLURM, "stop", directory], capture_output=True, timeout=180)
        signal.signal(signal.SIGTERM, previous)
