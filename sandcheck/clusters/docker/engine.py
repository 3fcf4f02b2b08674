"""Which Docker engine a run drives and what the run needs in it: the runtimes, the probe
image and a network of the run's own.

By default the run starts a private dockerd (sandcheck/clusters/dockerd/daemon.py) whose daemon.json
registers the catalog's runtimes. With ``--docker-host`` it uses a running engine and never
reconfigures it: a runtime that engine lacks is reported missing with how to add it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import docker
import docker.errors

from sandcheck.catalog import Runtime
from sandcheck.clusters.base import RUN_LABEL
from sandcheck.clusters.dockerd.daemon import (
    INSTALL_HINT,
    PrivateDockerd,
    run_docker,
)
from sandcheck.containerd.images import ProbeImage
from sandcheck.errors import ComponentError, UserError
from sandcheck.progress import Progress, quiet
from sandcheck.provision.paths import path_dir, search_path
from sandcheck.provision.preconditions import try_precondition
from sandcheck.timeouts import TIMEOUTS

DEFAULT_HOST = "unix:///var/run/docker.sock"
FROM_ENVIRONMENT = "env"
"""``--docker-host`` with no value: DOCKER_HOST, else the default socket."""
ENGINE_FILE = "engine.json"
"""In the run's work dir: which engine holds the run's containers (for cleanup)."""
BUILTIN_RUNTIME = "runc"
"""dockerd's own runtime: daemon.json may not redefine it."""
_OCI_CLI_TYPES = ("io.containerd.runc.v2", "io.containerd.runsc.v1")
"""Handler types whose runtime is an OCI command-line binary that dockerd can run."""


def network_name(run_id: str) -> str:
    return f"sandcheck-{run_id}"


def bridge_name(run_id: str) -> str:
    """The Linux bridge of the run's network (IFNAMSIZ is 16): named, so cleanup can find
    it after a crash; distinct from the node backend's ``sc...`` bridges."""
    return "sd" + hashlib.sha256(run_id.encode()).hexdigest()[:10]


def subnet(run_id: str) -> str:
    """A /24 of its own per run, beside the node backend's 10.233.x.0/24."""
    octet = int(hashlib.sha256(run_id.encode()).hexdigest()[:4], 16) % 250 + 1
    return f"10.234.{octet}.0/24"


def resolve_host(option: str | None) -> str | None:
    """The engine ``--docker-host`` names (None: start a private one)."""
    if option is None:
        return None
    if option == FROM_ENVIRONMENT:
        return os.environ.get("DOCKER_HOST") or DEFAULT_HOST
    if "://" not in option:
        raise UserError(f"--docker-host {option}: give an engine address such as "
                        f"{DEFAULT_HOST} or tcp://HOST:2376 (or no value for DOCKER_HOST)")
    return option


def is_local(host: str) -> bool:
    """Whether the engine's containers run on this machine (its socket is a local file)."""
    return host.startswith("unix://")


def oci_binary(rt: Runtime) -> str | None:
    """The OCI runtime binary dockerd would run for ``rt`` (None: not an OCI CLI runtime)."""
    if rt.runtime_type not in _OCI_CLI_TYPES:
        return None
    return rt.options.get("BinaryName") or rt.binaries[0]


def runtime_args(rt: Runtime) -> list[str]:
    """The catalog's runtime flags as command-line arguments: runsc's config file table
    (``platform = "systrap"``, ``oci-seccomp = "true"``) is what the containerd shim turns
    into runsc flags; dockerd passes runtimeArgs instead."""
    flags: dict[str, Any] = {}
    for content in rt.config_files.values():
        flags.update(content.get("runsc_config") or {})
    return [f"--{key}={value}" for key, value in flags.items()]


def add_hint(rt: Runtime) -> str:
    """How a user registers ``rt`` with their own engine."""
    entry = {"path": oci_binary(rt) or rt.name}
    if runtime_args(rt):
        entry["runtimeArgs"] = runtime_args(rt)
    how = f'add "{rt.handler}": {json.dumps(entry)} to "runtimes" in /etc/docker/daemon.json'
    if rt.runtime_type == "io.containerd.runsc.v1":
        how = f"run `runsc install` (or {how})"
    return f"{how}, then restart dockerd"


class Engine:
    """A Docker engine for one run: started here (private) or given (``host``)."""

    def __init__(self, workdir: Path, run_id: str, host: str | None,
                 progress: Progress = quiet):
        self.workdir = workdir
        self.run_id = run_id
        self.given_host = host
        self.progress = progress
        self.daemon: PrivateDockerd | None = None
        self.client: docker.DockerClient | None = None
        self.api_version: str | None = None
        self.network: str | None = None
        self.loaded_image: str | None = None
        """The probe image id when this run loaded it into a user's engine (removed at stop)."""

    @property
    def private(self) -> bool:
        return self.given_host is None

    @property
    def host(self) -> str:
        return self.daemon.host if self.daemon is not None else self.given_host

    # -- bring-up -----------------------------------------------------------------------

    def start(self, runtimes: list[Runtime]) -> dict[str, str]:
        """Start or reach the engine; returns the runtimes it cannot run (catalog name ->
        what is missing and how to get it)."""
        missing: dict[str, str] = {}
        if self.private:
            table, missing = private_runtimes(runtimes)
            self.daemon = PrivateDockerd(self.workdir / "engine", self.run_id, runtimes=table,
                                         privileged_wrapper=True, extra_path=[str(path_dir())],
                                         progress=self.progress)
            self.daemon.start(timeout=TIMEOUTS.daemon_start)
        (self.workdir / ENGINE_FILE).write_text(json.dumps(
            {"host": self.host, "private": self.private}))
        self.client = connect(self.host)
        self.api_version = self.client.api.api_version
        if not self.private:
            registered = self.info().get("Runtimes") or {}
            missing = {rt.name: f"the engine at {self.host} has no runtime {rt.handler!r}: "
                       f"{add_hint(rt)}" for rt in runtimes if rt.handler not in registered}
        return missing

    def client_kw(self) -> dict[str, Any]:
        """docker.from_env keywords for this engine (testcontainers' docker_client_kw): the
        address given as the client's environment, so this process's DOCKER_HOST stays as
        it is, and the API version fixed, so a client asks no /version per container."""
        return {"environment": {"DOCKER_HOST": self.host}, "version": self.api_version,
                "timeout": int(max(TIMEOUTS.pod_start, TIMEOUTS.exec))}

    def info(self) -> dict[str, Any]:
        return self.client.info()

    def load_image(self, image: ProbeImage) -> str:
        """Load the probe archive (no registry); returns the image id. The alias tag pods
        name is set even where the archive carries only its digest tag."""
        try:
            before = self.client.images.get(image.alias).id
        except docker.errors.ImageNotFound:
            before = None
        with open(image.archive, "rb") as archive:
            loaded = self.client.images.load(archive.read())
        if not loaded:
            raise ComponentError(f"docker load of {image.archive} loaded no image")
        ours = loaded[0]
        for ref in image.refs:
            repository, _, tag = ref.rpartition(":")
            ours.tag(repository, tag)
        if not self.private and before != ours.id:
            self.loaded_image = ours.id
        return ours.id

    def make_network(self) -> str:
        """A bridge of the run's own with a deterministic name, internal (no route out):
        pods get a network namespace with an interface, as on the CRI backends."""
        name = network_name(self.run_id)
        self.client.networks.create(
            name, driver="bridge", internal=True, labels={RUN_LABEL: self.run_id},
            options={"com.docker.network.bridge.name": bridge_name(self.run_id)},
            ipam=docker.types.IPAMConfig(pool_configs=[
                docker.types.IPAMPool(subnet=subnet(self.run_id))]))
        self.network = name
        return name

    def privileged_runtime(self, handler: str) -> str:
        """The runtime a privileged container of ``handler`` runs with: runc, crun or youki
        through the private daemon's capability wrapper where this host cannot grant every
        capability."""
        wrapped = self.daemon.wrapper_of(handler) if self.daemon is not None else None
        return wrapped or handler

    # -- the CLI, for the harness comparison and for diagnostics -------------------------

    def docker(self, *args: str, timeout: float = TIMEOUTS.command, check: bool = True
               ) -> subprocess.CompletedProcess:
        """The docker CLI against this engine."""
        if self.daemon is not None:
            return self.daemon.docker(*args, timeout=timeout, check=check)
        cli = shutil.which("docker")
        if cli is None:
            raise UserError(f"the docker CLI is not installed: {INSTALL_HINT}")
        env = {k: v for k, v in os.environ.items() if k not in ("DOCKER_HOST", "DOCKER_CONTEXT")}
        return run_docker(cli, self.host, args, env=env, timeout=timeout, check=check)

    def log_tail(self, lines: int = 30) -> str:
        return self.daemon.log_tail(lines) if self.daemon is not None else "(the user's engine)"

    # -- teardown ------------------------------------------------------------------------

    def stop(self) -> list[str]:
        """Remove the run's containers and network (and the image this run loaded into a
        user's engine); stop a private engine. Lines name what was removed."""
        done: list[str] = []
        if self.client is not None:
            done = remove_run_objects(self.client, self.run_id)
            if self.loaded_image is not None:
                try:
                    self.client.images.remove(self.loaded_image, force=True)
                except docker.errors.APIError:
                    pass
            self.client.close()
            self.client = None
        if self.daemon is not None:
            for line in self.daemon.stop():
                self.progress(f"dockerd changed the host and it was not put back: {line}")
        return done


def connect(host: str) -> docker.DockerClient:
    """An SDK client of the engine at ``host``; UserError when nothing answers there."""
    try:
        client = docker.DockerClient(base_url=host, version="auto", timeout=TIMEOUTS.api_call)
        client.ping()
    except docker.errors.DockerException as exc:
        raise UserError(f"no Docker engine answers at {host} ({exc}): start it, or drop "
                        "--docker-host to let the run start a private dockerd") from None
    return client


def remove_run_objects(client: docker.DockerClient, run_id: str) -> list[str]:
    """Remove the containers and networks labelled with ``run_id``."""
    done = []
    label = f"{RUN_LABEL}={run_id}"
    for container in client.containers.list(all=True, filters={"label": label}):
        try:
            container.remove(force=True, v=True)
            done.append(f"docker rm {container.short_id}")
        except docker.errors.NotFound:
            continue
    for network in client.networks.list(filters={"label": label}):
        try:
            network.remove()
            done.append(f"docker network rm {network.name}")
        except docker.errors.NotFound:
            continue
    return done


def private_runtimes(runtimes: list[Runtime]) -> tuple[dict[str, dict], dict[str, str]]:
    """daemon.json's runtimes table for the private dockerd, and the runtimes left out
    (catalog name -> why and how to get it)."""
    table: dict[str, dict] = {}
    missing: dict[str, str] = {}
    path = search_path()
    for rt in runtimes:
        binary = oci_binary(rt)
        if binary is None:
            missing[rt.name] = (f"dockerd runs OCI runtime binaries; {rt.runtime_type} is a "
                                "containerd shim: use --backend node or local")
            continue
        exe = shutil.which(binary, path=path)
        if exe is None:
            how = rt.unavailable or f"run `sandcheck provision --runtimes {rt.name}`"
            missing[rt.name] = f"{binary} not found: {how}"
            continue
        outcome = try_precondition(rt, path)
        if outcome is not None and not outcome.holds:
            missing[rt.name] = outcome.reason or ""
            continue
        if rt.handler == BUILTIN_RUNTIME and not runtime_args(rt):
            continue  # dockerd's own runc, found on its PATH like this one
        table[rt.handler] = {"path": exe, **({"runtimeArgs": runtime_args(rt)}
                                             if runtime_args(rt) else {})}
    return table, missing
