"""The docker engine a kind cluster lives in: a private dockerd for the run (its own roots
and socket, the capability wrapper, host settings put back at stop), or, for a cluster the
user names with --kind-cluster, the engine at DOCKER_HOST (else the default socket),
which is only read and exec'd into."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from sandcheck.clusters.dockerd.daemon import PrivateDockerd, run_docker
from sandcheck.errors import UserError
from sandcheck.timeouts import TIMEOUTS

DEFAULT_HOST = "unix:///var/run/docker.sock"
BRIDGES_FILE = "bridges.txt"
"""Links of the engine's networks, recorded in the work dir for `sandcheck cleanup`."""


class UserEngine:
    """A running engine; never reconfigured."""

    def __init__(self, host: str | None = None):
        self.host = host or os.environ.get("DOCKER_HOST") or DEFAULT_HOST
        cli = shutil.which("docker", path="/usr/bin:" + os.environ.get("PATH", ""))
        if cli is None:
            raise UserError("the docker CLI is not installed: run `sandcheck provision "
                            "--docker`")
        self.cli = cli

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["DOCKER_HOST"] = self.host
        env.pop("DOCKER_CONTEXT", None)
        return env

    def docker(self, *args: str, timeout: float = TIMEOUTS.command, check: bool = True,
               input: str | None = None) -> subprocess.CompletedProcess:
        return run_docker(self.cli, self.host, args, env=self.env(), timeout=timeout,
                          check=check, input=input)


def private_engine(workdir: Path, run_id: str, progress) -> PrivateDockerd:
    """A private dockerd whose default runtime can start kind's privileged nodes here."""
    return PrivateDockerd(workdir, run_id, privileged_wrapper=True, progress=progress)


def record_bridges(engine, workdir: Path) -> None:
    """The host links of the engine's bridge networks (kind's ``kind`` network):
    dockerd removes them itself, but a killed one leaves them for cleanup."""
    ids = engine.docker("network", "ls", "-q", "--filter", "driver=bridge", check=False,
                        timeout=TIMEOUTS.api_call).stdout.split()
    (workdir / BRIDGES_FILE).write_text("".join(f"br-{i[:12]}\n" for i in ids))
