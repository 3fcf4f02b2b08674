"""CNCF Distribution's registry, built by ``sandcheck provision --registry``: as a process
on the loopback address (``LoopbackRegistry``) and as a one-file image for an engine's
network (the kind backend's local registry).

The process is born in the run's cgroup tree (``/sandcheck-registry-<run id>``) and its
storage lives in the run's work dir, so teardown and ``sandcheck cleanup`` remove both
whatever happened to the run. Its access log is kept: it shows who pulled what.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from sandcheck.errors import UserError
from sandcheck.host import runcgroups
from sandcheck.host.daemon import Daemon
from sandcheck.host.workdir import WORK_BASE, claim, delete_tree
from sandcheck.progress import Progress, quiet
from sandcheck.provision import pins
from sandcheck.provision.kindnode.ociarchive import (
    FileEntry,
    file_sha256,
    write_archive,
    write_layer,
)
from sandcheck.provision.paths import cache_dir
from sandcheck.provision.tools import REGISTRY
from sandcheck.timeouts import TIMEOUTS

INSTALL_HINT = "run `sandcheck provision --registry` (builds CNCF Distribution's registry)"
WORKDIR_PREFIX = "registry"
IMAGE_REPOSITORY = "localhost/sandcheck/registry"
CONTAINER_PORT = 5000
ENV = {"OTEL_TRACES_EXPORTER": "none"}
"""Distribution 3 exports traces to an OTLP collector unless told not to."""


def registry_binary() -> Path:
    binary = REGISTRY.binaries()["registry"]
    if not binary.is_file():
        raise UserError(f"the registry binary is not built ({binary}): {INSTALL_HINT}")
    return binary


def registry_config(addr: str, root: str, htpasswd: str | None = None) -> dict[str, Any]:
    """The registry's configuration (JSON is YAML, which it reads)."""
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
        "storage": {"filesystem": {"rootdirectory": root}, "delete": {"enabled": True}},
        "http": {"addr": addr},
    }
    if htpasswd is not None:
        config["auth"] = {"htpasswd": {"realm": "sandcheck", "path": htpasswd}}
    return config


def free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoopbackRegistry(Daemon):
    """A registry serving ``127.0.0.1:<port>`` over plain HTTP for one run.

    ``htpasswd``: text of an htpasswd file (bcrypt entries) to require a login.
    """

    def __init__(self, run_id: str, htpasswd: str | None = None, progress: Progress = quiet):
        self.run_id = run_id
        self.workdir = WORK_BASE / f"{WORKDIR_PREFIX}-{run_id}"
        self.cgroup = runcgroups.run_cgroup(run_id, WORKDIR_PREFIX)
        self.htpasswd = htpasswd
        self.progress = progress
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.name = "the registry"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def endpoint(self) -> str:
        """The URL a containerd on this host pulls from."""
        return f"http://{self.host}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "registry.log"

    def start(self) -> LoopbackRegistry:
        binary = registry_binary()
        claim(self.workdir)
        (self.workdir / "storage").mkdir(parents=True, exist_ok=True)
        auth = None
        if self.htpasswd is not None:
            (self.workdir / "htpasswd").write_text(self.htpasswd)
            auth = str(self.workdir / "htpasswd")
        self.port = free_loopback_port()
        config = self.workdir / "config.yml"
        config.write_text(json.dumps(registry_config(
            self.host, str(self.workdir / "storage"), auth), indent=2))
        self.spawn([str(binary), "serve", str(config)], {**os.environ, **ENV},
                   cgroup=self.cgroup, born_in_cgroup=True)
        self.await_serving(self._serving, TIMEOUTS.daemon_start,
                           f"the registry on {self.host} to answer /v2/",
                           interval=TIMEOUTS.exit_poll)
        self.progress(f"registry {pins.DISTRIBUTION_VERSION} serving http://{self.host}")
        return self

    def _serving(self) -> bool | None:
        try:
            with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=TIMEOUTS.http_probe):
                return True
        except urllib.error.HTTPError as exc:
            return True if exc.code == 401 else None
        except OSError:
            return None

    def requests(self) -> list[str]:
        """Access log lines (``"GET /v2/... HTTP/1.1" 200``), for evidence."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if '"' in line and " /v2/" in line]

    def stop(self) -> None:
        """Kill the registry (by its cgroup), remove its cgroups and storage; safe twice."""
        self.stop_process()
        runcgroups.release(self.cgroup)
        self.proc = None
        delete_tree(self.workdir)


def registry_image(progress: Progress = quiet) -> tuple[Path, str]:
    """A one-layer image of the registry binary and its config (port 5000, storage in
    /var/lib/registry), cached by the binary's digest: (archive, ref)."""
    binary = registry_binary()
    tag = f"{pins.DISTRIBUTION_VERSION}-{file_sha256(binary)[:12]}"
    ref = f"{IMAGE_REPOSITORY}:{tag}"
    where = cache_dir() / "registry-image"
    archive = where / f"registry-{tag}.tar"
    if archive.is_file():
        return archive, ref
    where.mkdir(parents=True, exist_ok=True)
    config = json.dumps(registry_config(f":{CONTAINER_PORT}", "/var/lib/registry"),
                        indent=2).encode()
    layer = where / f".registry-{tag}.layer.tar.{os.getpid()}"
    try:
        write_layer(layer, [FileEntry("bin/registry", 0o755, source=binary),
                            FileEntry("etc/distribution/config.yml", data=config)],
                    {"bin": 0o755, "etc": 0o755, "etc/distribution": 0o755, "var": 0o755,
                     "var/lib": 0o755, "var/lib/registry": 0o755, "tmp": 0o1777})
        write_archive(archive, layer, {
            "Entrypoint": ["/bin/registry", "serve", "/etc/distribution/config.yml"],
            "Env": [f"{k}={v}" for k, v in ENV.items()],
            "ExposedPorts": {f"{CONTAINER_PORT}/tcp": {}}}, [ref],
            "sandcheck registry image")
    finally:
        layer.unlink(missing_ok=True)
    progress(f"registry image {ref} written to {archive}")
    return archive, ref
