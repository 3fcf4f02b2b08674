"""The docker backend's contract: pods are containers of one engine, per run labelled and
on a network of the run's own, all made through testcontainers (its reaper off: it needs
an image from a registry; sandcheck's run label and cleanup remove what a run leaves)."""

from __future__ import annotations

import platform
import shutil
from typing import Any

from testcontainers.core.config import testcontainers_config

from sandcheck.catalog import Runtime
from sandcheck.clusters.base import BackendSettings, Capability, PodSpec, unique_name
from sandcheck.clusters.docker.engine import Engine, is_local, resolve_host
from sandcheck.clusters.docker.pods import DockerPod, cli_create_args, create_options
from sandcheck.clusters.dockerd.daemon import INSTALL_HINT
from sandcheck.containerd.images import ProbeImage
from sandcheck.errors import ComponentError, UserError
from sandcheck.host.cgroups import cgroup_mode
from sandcheck.host.workdir import WORK_BASE, claim, delete_tree
from sandcheck.progress import Progress, quiet
from sandcheck.provision.versions import versions
from sandcheck.timeouts import TIMEOUTS

WORKDIR_PREFIX = "docker"
_ON_THIS_HOST = frozenset({Capability.HOST_PROCESSES, Capability.NODE_CGROUPS,
                           Capability.NODE_IS_HOST})


class DockerBackend:
    """Containers of a Docker engine (a private dockerd, or the user's), one per pod."""

    name = "docker"
    level = "Docker"

    def __init__(self, runtimes: list[Runtime], run_id: str, image: ProbeImage | None,
                 docker_host: str | None = None, keep: bool = False,
                 progress: Progress = quiet):
        """Nothing starts here (the registry makes backends to check their options)."""
        self.runtimes = list(runtimes)
        self.missing_runtimes: dict[str, str] = {}
        self.run_id = run_id
        self.image = image
        self.keep = keep
        self.progress = progress
        self.workdir = WORK_BASE / f"{WORKDIR_PREFIX}-{run_id}"
        self.engine = Engine(self.workdir, run_id, resolve_host(docker_host), progress)
        self.capabilities = frozenset({Capability.DOCKER_CLI}) | (
            _ON_THIS_HOST if self.engine.private or is_local(self.engine.host) else frozenset())
        self.image_id: str | None = None

    def start(self) -> None:
        if self.image is None:
            raise UserError("the docker backend needs the probe image: pass the ProbeImage "
                            "that sandcheck.fixtures.image.build_probe_image built")
        claim(self.workdir)
        # The reaper container comes from a registry; the run label and cleanup replace it.
        testcontainers_config.ryuk_disabled = True
        self.missing_runtimes = self.engine.start(self.runtimes)
        self.runtimes = [rt for rt in self.runtimes if rt.name not in self.missing_runtimes]
        if not self.runtimes:
            raise UserError("none of the selected runtimes can run on this engine: " + "; ".join(
                f"{k}: {v}" for k, v in self.missing_runtimes.items()))
        self.image_id = self.engine.load_image(self.image)
        self.engine.make_network()

    def environment(self) -> dict[str, Any]:
        info = self.engine.info() if self.engine.client is not None else {}
        registered = info.get("Runtimes") or {}
        return {
            "backend": self.name,
            "docker_engine": info.get("ServerVersion"),
            "docker_api_version": self.engine.api_version,
            "docker_host": "private dockerd" if self.engine.private else self.engine.host,
            "docker_cgroup_driver": info.get("CgroupDriver"),
            "containerd_of_engine": (info.get("ContainerdCommit") or {}).get("ID"),
            "handlers_verified": {rt.handler: registered.get(rt.handler)
                                  for rt in self.runtimes},
            "network": self.engine.network,
            "probe_image": self.image.ref if self.image else None,
            "cgroup_mode": cgroup_mode(),
            "versions": versions(),
        }

    # -- pods ----------------------------------------------------------------------------

    def _options(self, spec: PodSpec) -> dict[str, Any]:
        runtime = spec.runtime.handler
        if spec.privileged:
            runtime = self.engine.privileged_runtime(runtime)
        return create_options(spec, self.run_id, runtime, self.engine.network)

    def create_pod(self, spec: PodSpec) -> DockerPod:
        pod = DockerPod(self.engine, spec, unique_name(spec.name_prefix))
        try:
            pod.start(self.image_id, self._options(spec))
        except BaseException as exc:
            detail = pod.diagnostics() if pod.id else self.engine.log_tail(30)
            self.delete_pod(pod)
            if isinstance(exc, ComponentError) and pod.id:
                raise ComponentError(f"{exc}\n{detail}") from None
            raise
        got = (pod.attrs.get("HostConfig") or {}).get("Runtime")
        if got != self._options(spec)["runtime"]:
            self.delete_pod(pod)
            raise ComponentError(f"{pod.name}: asked for runtime {spec.runtime.handler!r}, "
                                 f"the engine ran {got!r}")
        return pod

    def delete_pod(self, pod: DockerPod) -> None:
        pod.remove()

    def node_kernel(self, pod: DockerPod) -> str | None:
        if Capability.NODE_IS_HOST in self.capabilities:
            return platform.release()
        return (self.engine.info() or {}).get("KernelVersion")

    def host_pids(self, pod: DockerPod) -> list[int]:
        return pod.host_pids()

    def inspect_pod(self, pod: DockerPod) -> dict[str, Any]:
        """``{"container": docker inspect}`` (the engine's record; not CRI's)."""
        return {"container": pod.inspect()}

    def docker_engine(self) -> DockerBackend:
        return self

    def docker(self, *args: str, timeout: float = TIMEOUTS.command, check: bool = True):
        return self.engine.docker(*args, timeout=timeout, check=check)

    def cli_create_args(self, spec: PodSpec, name: str) -> list[str]:
        return cli_create_args(self._options(spec), name, self.image_id)

    # -- teardown ------------------------------------------------------------------------

    def stop(self) -> None:
        if self.keep:
            return
        for line in self.engine.stop():
            self.progress(f"docker backend teardown: {line}")
        delete_tree(self.workdir)


def open_backend(settings: BackendSettings) -> DockerBackend:
    return DockerBackend(settings.runtimes, settings.run_id, settings.image,
                         docker_host=settings.options.get("docker_host"), keep=settings.keep,
                         progress=settings.progress)


def unavailable() -> str | None:
    """Why the docker backend cannot run here (None: it can, with a private dockerd)."""
    if shutil.which("dockerd") is None and shutil.which("docker") is None:
        return f"neither dockerd nor the docker CLI is installed: {INSTALL_HINT}"
    return None
