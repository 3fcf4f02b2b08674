"""A private dockerd: own data root, exec root, pid file, socket and config under a work
dir, so a run never touches the host's engine, and its own containerd (dockerd starts one
under the exec root).

What this host needs is configured here once for the docker and kind backends: no
iptables or forwarding changes (containers talk on their own bridge; published ports go
through docker-proxy on loopback), a cgroup parent named by the run, and, where root lacks
CAP_SYS_RESOURCE, privileged containers started through the capability wrapper
(sandcheck/clusters/dockerd/capdrop.py). Host settings dockerd writes anyway are put back at stop.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from sandcheck.clusters.dockerd import capdrop
from sandcheck.errors import UserError
from sandcheck.host import command, runcgroups
from sandcheck.host.daemon import Daemon
from sandcheck.host.state import HostState
from sandcheck.host.workdir import claim, delete_tree
from sandcheck.progress import Progress, quiet
from sandcheck.provision.hostprep import CAP_SYS_RESOURCE, has_capability
from sandcheck.timeouts import TIMEOUTS

INSTALL_HINT = "run `sandcheck provision --docker` (installs Debian's docker.io)"
WRAPPER_RUNTIME = "sandcheck-capdrop"
CAPABILITY_BOUND = ("runc", "crun", "youki")
"""Runtimes that refuse a container asking for a capability the host cannot grant; the
wrapper takes it out first (runsc grants its own, in the Sentry)."""


def cgroup_parent_of(run_id: str) -> str:
    """The cgroup a private dockerd of ``run_id`` puts its containers under."""
    return f"/sandcheck-docker-{run_id}"


def find_dockerd() -> str:
    exe = shutil.which("dockerd")
    if exe is None:
        raise UserError(f"dockerd not found: {INSTALL_HINT}")
    return exe


def docker_cli(dockerd: str) -> str:
    """The docker CLI of the same release as ``dockerd`` (its package's sibling), else
    PATH's: a newer CLI defaults to BuildKit, which an older engine may lack."""
    sibling = Path(dockerd).resolve().parent.parent / "bin" / "docker"
    if sibling.is_file():
        return str(sibling)
    exe = shutil.which("docker")
    if exe is None:
        raise UserError(f"the docker CLI is not installed: {INSTALL_HINT}")
    return exe


def run_docker(cli: str, host: str, args: tuple[str, ...] | list[str], env: dict[str, str],
               timeout: float = TIMEOUTS.command, check: bool = True,
               input: str | None = None) -> subprocess.CompletedProcess:
    """``cli -H host args``, bounded; ComponentError naming the call when it fails."""
    return command.run([cli, "-H", host, *args], timeout, env=env, check=check, input=input,
                       what=f"docker {' '.join(args)}")


class PrivateDockerd(Daemon):
    """Start/stop a dockerd whose every path lives under ``workdir``.

    ``runtimes`` is daemon.json's runtimes table (name -> {"path", "runtimeArgs"});
    ``privileged_wrapper`` makes the wrapper the default runtime (kind's nodes are started
    by kind with no --runtime) when this process cannot grant CAP_SYS_RESOURCE.
    """

    def __init__(self, workdir: Path, run_id: str, runtimes: dict[str, dict] | None = None,
                 privileged_wrapper: bool = False, extra_path: list[str] | None = None,
                 progress: Progress = quiet):
        self.workdir = Path(workdir)
        self.run_id = run_id
        self.runtimes = dict(runtimes or {})
        self.privileged_wrapper = privileged_wrapper and not has_capability(CAP_SYS_RESOURCE)
        self.extra_path = list(extra_path or [])
        self.progress = progress
        self.socket = self.workdir / "docker.sock"
        self.log_path = self.workdir / "dockerd.log"
        self.cgroup_parent = cgroup_parent_of(run_id)
        self.proc: subprocess.Popen | None = None
        self.name = "dockerd"
        self.host_before: HostState | None = None
        self.binary: str | None = None

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def env(self) -> dict[str, str]:
        """dockerd finds containerd, runc and docker-proxy on its PATH; the CLI its engine
        through DOCKER_HOST (set for the child only, never in this process)."""
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join([*self.extra_path, env.get("PATH", "/usr/bin:/bin")])
        env["DOCKER_HOST"] = self.host
        env.pop("DOCKER_CONTEXT", None)
        return env

    def wrapper_of(self, handler: str) -> str | None:
        """The wrapped runtime a privileged container of ``handler`` needs here (runc:
        dockerd's own; a registered runc-like binary such as crun or youki), else None."""
        if not self.privileged_wrapper:
            return None
        if handler == "runc":
            return WRAPPER_RUNTIME
        path = (self.runtimes.get(handler) or {}).get("path", "")
        wrapped = f"{WRAPPER_RUNTIME}-{handler}"
        return wrapped if Path(path).name in CAPABILITY_BOUND and \
            not self.runtimes[handler].get("runtimeArgs") else None

    def _write_wrapper(self, name: str = WRAPPER_RUNTIME, real: str | None = None) -> str:
        real = real or shutil.which("runc", path=self.env()["PATH"])
        if real is None:
            raise UserError("runc not found: run `sandcheck provision`")
        wrapper = self.workdir / "bin" / name
        wrapper.parent.mkdir(parents=True, exist_ok=True)
        wrapper.write_text(f"#!{sys.executable} -S\n{inspect.getsource(capdrop)}\n"
                           f"main({real!r})\n")
        wrapper.chmod(0o755)
        return str(wrapper)

    def config(self) -> dict[str, Any]:
        runtimes = dict(self.runtimes)
        doc: dict[str, Any] = {"runtimes": runtimes, "storage-driver": "overlay2"}
        if self.privileged_wrapper:
            runtimes[WRAPPER_RUNTIME] = {"path": self._write_wrapper()}
            doc["default-runtime"] = WRAPPER_RUNTIME
            for handler, entry in self.runtimes.items():
                if (name := self.wrapper_of(handler)) is not None:
                    runtimes[name] = {"path": self._write_wrapper(name, entry["path"])}
        return doc

    def start(self, timeout: float = TIMEOUTS.daemon_start) -> PrivateDockerd:
        self.binary = find_dockerd()
        self.host_before = HostState.read()
        claim(self.workdir)  # `sandcheck cleanup` leaves it alone while this process lives
        for sub in ("data", "exec"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        config_path = self.workdir / "daemon.json"
        config_path.write_text(json.dumps(self.config(), indent=2))
        argv = [self.binary, "--config-file", str(config_path),
                "--data-root", str(self.workdir / "data"),
                "--exec-root", str(self.workdir / "exec"),
                "--pidfile", str(self.workdir / "dockerd.pid"), "-H", self.host,
                "--iptables=false", "--ip6tables=false", "--ip-forward=false",
                "--ip-masq=false", "--bridge=none",
                "--exec-opt", "native.cgroupdriver=cgroupfs",
                "--cgroup-parent", self.cgroup_parent]
        # Born in the run's cgroup tree (beside its containers), so teardown and cleanup
        # find the engine, its containerd and its shims without their names.
        self.spawn(argv, self.env(), cgroup=f"{self.cgroup_parent}/engine",
                   born_in_cgroup=True)
        self.await_serving(self._serving, timeout, f"dockerd ({self.binary}) to serve its API")
        self.progress(f"dockerd {self.version()} up on {self.socket}")
        return self

    def _serving(self) -> bool | None:
        if not self.socket.exists():
            return None
        probe = self.docker("version", "--format", "{{.Server.Version}}", check=False,
                            timeout=TIMEOUTS.api_call)
        return True if probe.returncode == 0 else None

    def docker(self, *args: str, timeout: float = TIMEOUTS.command, check: bool = True,
               input: str | None = None) -> subprocess.CompletedProcess:
        """The docker CLI against this engine."""
        return run_docker(docker_cli(self.binary or find_dockerd()), self.host, args,
                          env=self.env(), timeout=timeout, check=check, input=input)

    def version(self) -> str:
        return self.docker("version", "--format", "{{.Server.Version}}",
                           timeout=TIMEOUTS.api_call).stdout.strip()

    def stop(self) -> list[str]:
        """Remove every container and network, stop the engine and its containerd, then
        the run's cgroups, mounts and files; put back host settings dockerd changed.
        Returns what changed on the host and was not put back (empty: nothing)."""
        if self.proc is not None and self.proc.poll() is None:
            ids = self.docker("ps", "-aq", check=False, timeout=TIMEOUTS.api_call).stdout.split()
            if ids:
                self.docker("rm", "-f", "-v", *ids, check=False, timeout=TIMEOUTS.pod_delete)
            self.docker("network", "prune", "-f", check=False, timeout=TIMEOUTS.api_call)
        self.stop_process()
        runcgroups.release(self.cgroup_parent)
        delete_tree(self.workdir)
        left: list[str] = []
        if self.host_before is not None:
            for line in self.host_before.restore_sysctls():
                self.progress(f"dockerd teardown: {line}")
            left = self.host_before.differences()
        return left
