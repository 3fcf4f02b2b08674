"""A PodSpec as a Docker container, made through testcontainers-python's DockerContainer.

The engine's create and start calls are timed apart (monotonic, around each call only);
the engine's own timestamps of the start (``Created``, ``State.StartedAt``, nanoseconds)
are read by the wait strategy's inspect after the start, outside both timers.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import docker.errors
from docker.models.containers import Container
from testcontainers.core.container import DockerContainer
from testcontainers.core.docker_client import DockerClient
from testcontainers.core.exceptions import ContainerStartException
from testcontainers.core.wait_strategies import ContainerStatusWaitStrategy

from sandcheck.clusters.base import (
    RUN_LABEL,
    RUNTIME_LABEL,
    ExecResult,
    PhaseTimes,
    PodSpec,
)
from sandcheck.containerd.cri import timestamp_ns
from sandcheck.errors import ComponentError
from sandcheck.host import proc as hostproc
from sandcheck.timeouts import TIMEOUTS

if TYPE_CHECKING:
    from sandcheck.clusters.docker.engine import Engine

ENGINE_START = "engine_created_to_started_seconds"
"""The start phase the engine's own clock gives: container record made -> process started."""
_SECCOMP_UNCONFINED = "seccomp=unconfined"
_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}


def memory_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity ("64Mi", "1G", "1048576") in bytes."""
    for suffix, factor in _UNITS.items():
        if quantity.endswith(suffix):
            return int(float(quantity[:-len(suffix)]) * factor)
    return int(quantity)


def nano_cpus(quantity: str) -> int:
    """A Kubernetes CPU quantity ("100m", "1.5") in Docker's billionths of a CPU."""
    if quantity.endswith("m"):
        return int(quantity[:-1]) * 10**6
    return int(float(quantity) * 10**9)


def create_options(spec: PodSpec, run_id: str, runtime: str, network: str | None
                   ) -> dict[str, Any]:
    """docker SDK ``containers.create`` keywords of a pod. The command replaces the image's
    ENTRYPOINT, as a CRI command does; Docker's default seccomp profile is RuntimeDefault."""
    limits = (spec.resources or {}).get("limits") or {}
    options: dict[str, Any] = {
        "entrypoint": spec.command[:1], "command": spec.command[1:],
        "runtime": runtime, "labels": {RUN_LABEL: run_id, RUNTIME_LABEL: spec.runtime.name,
                                       **spec.labels},
        "privileged": spec.privileged, "network": network or "none",
    }
    security_opt = [_SECCOMP_UNCONFINED] if spec.seccomp == "Unconfined" else []
    if spec.allow_privilege_escalation is False:
        security_opt.append("no-new-privileges")
    if security_opt:
        options["security_opt"] = security_opt
    if spec.add_capabilities:
        options["cap_add"] = list(spec.add_capabilities)
    if spec.drop_capabilities:
        options["cap_drop"] = list(spec.drop_capabilities)
    if spec.run_as_user is not None:
        options["user"] = str(spec.run_as_user)
    if "memory" in limits:
        options["mem_limit"] = memory_bytes(limits["memory"])
    if "cpu" in limits:
        options["nano_cpus"] = nano_cpus(limits["cpu"])
    return options


def cli_create_args(options: dict[str, Any], name: str, image: str) -> list[str]:
    """The same container as ``docker create`` arguments (for the CLI timed alone)."""
    args = ["create", "--name", name, "--runtime", options["runtime"],
            "--network", options["network"], "--entrypoint", options["entrypoint"][0]]
    args += [f"--label={k}={v}" for k, v in options["labels"].items()]
    args += [f"--security-opt={o}" for o in options.get("security_opt", [])]
    args += [f"--cap-add={c}" for c in options.get("cap_add", [])]
    args += [f"--cap-drop={c}" for c in options.get("cap_drop", [])]
    if options["privileged"]:
        args.append("--privileged")
    if "user" in options:
        args += ["--user", options["user"]]
    if "mem_limit" in options:
        args += ["--memory", str(options["mem_limit"])]
    if "nano_cpus" in options:
        args += ["--cpus", str(options["nano_cpus"] / 1e9)]
    return [*args, image, *options["command"]]


def engine_phases(attrs: dict[str, Any]) -> dict[str, float]:
    """Seconds from the container's creation to its start by the engine's own clock
    (``docker inspect``'s Created and State.StartedAt); {} when either is missing."""
    created = timestamp_ns(attrs.get("Created"))
    started = timestamp_ns((attrs.get("State") or {}).get("StartedAt"))
    if created is None or started is None or started < created:
        return {}
    return {ENGINE_START: (started - created) / 1e9}


class _TimedClient(DockerClient):
    """testcontainers' client of one container, its create and start calls timed apart.
    It shares the connection of the client it wraps (and skips that one's set-up)."""

    def __init__(self, wrapped: DockerClient, phases: dict[str, float]):  # noqa: D107
        self.client = wrapped.client
        self.phases = phases

    def create(self, *args: Any, **kwargs: Any):
        mark = time.monotonic()
        container = super().create(*args, **kwargs)
        self.phases["create_seconds"] = time.monotonic() - mark
        return container

    def start(self, container) -> None:
        mark = time.monotonic()
        super().start(container)
        self.phases["start_seconds"] = time.monotonic() - mark


class ProbeContainer(DockerContainer):
    """testcontainers' DockerContainer of the probe image: started by ``start()``, waited
    for by the status strategy (running, or an error with the log tail)."""

    def __init__(self, image: str, name: str, client_kw: dict[str, Any],
                 options: dict[str, Any], phases: dict[str, float]):
        command = options.pop("command")
        super().__init__(image, docker_client_kw=client_kw, name=name, command=command)
        self.with_kwargs(**options)  # as given: ``network`` names an existing network
        self._docker = _TimedClient(self._docker, phases)
        self.waiting_for(ContainerStatusWaitStrategy().with_startup_timeout(
            int(TIMEOUTS.pod_start)))

    def wrapped(self) -> Container | None:
        """The docker SDK's container once the engine made it (None before)."""
        try:
            return self.get_wrapped_container()
        except ContainerStartException:
            return None


class DockerPod:
    """One container of the probe image; ``name`` is also its container name."""

    def __init__(self, engine: Engine, spec: PodSpec, name: str):
        self.engine = engine
        self.spec = spec
        self.name = name
        self.timings = PhaseTimes()
        self.container: ProbeContainer | None = None
        self.id: str | None = None
        self.attrs: dict[str, Any] = {}
        """docker inspect as the start's wait strategy last read it."""

    def start(self, image: str, options: dict[str, Any]) -> None:
        self.container = ProbeContainer(image, self.name, self.engine.client_kw(),
                                        dict(options), self.timings.phases)
        try:
            self.container.start()
        except TimeoutError as exc:  # the status strategy's answer to an exited container
            raise ComponentError(f"{self.name}: {exc}\n{self.diagnostics()}") from None
        except docker.errors.APIError as exc:
            raise ComponentError(f"{self.name}: the engine refused the container: "
                                 f"{exc.explanation or exc}") from None
        finally:
            wrapped = self.container.wrapped()
            if wrapped is not None:
                self.id = wrapped.id
                self.attrs = wrapped.attrs
        self.timings.own_clock = engine_phases(self.attrs)

    def exec(self, argv: list[str], timeout: float = TIMEOUTS.exec) -> ExecResult:
        """Through the engine's exec API, stdout and stderr apart; the client's read
        timeout (TIMEOUTS) bounds a call that hangs."""
        if self.container is None or self.id is None:
            raise ComponentError(f"pod {self.name} has no running container")
        start = time.monotonic()
        try:
            code, (out, err) = self.container.get_wrapped_container().exec_run(
                list(argv), demux=True)
        except docker.errors.APIError as exc:
            raise ComponentError(f"exec in {self.name}: {exc.explanation or exc}") from None
        return ExecResult(argv=list(argv), exit_code=code if code is not None else -1,
                          stdout=(out or b"").decode(errors="replace"),
                          stderr=(err or b"").decode(errors="replace"),
                          seconds=time.monotonic() - start)

    def inspect(self) -> dict[str, Any]:
        if self.id is None:
            return {}
        try:
            return self.engine.client.api.inspect_container(self.id)
        except docker.errors.APIError as exc:
            return {"error": str(exc)}

    def host_pids(self) -> list[int]:
        """The container's init process on the host, and every process naming its id: the
        shim (``-id <id>``) and, for runsc, the sandbox, gofer and waiters."""
        if self.id is None:
            return []
        pids = {pid for pid, _ in hostproc.processes_mentioning(self.id)}
        init = (self.inspect().get("State") or {}).get("Pid") or 0
        if init > 0:
            pids.add(init)
        return sorted(pids)

    def diagnostics(self) -> str:
        parts = [f"pod {self.name} runtime={self.spec.runtime.name} container={self.id}"]
        attrs = self.inspect()
        if attrs:
            shown = {k: attrs.get(k) for k in ("State", "Created", "HostConfig")}
            parts.append(f"--- docker inspect:\n{json.dumps(shown, indent=1)[:3000]}")
        if self.container is not None and self.container.wrapped() is not None:
            try:
                out, err = self.container.get_logs()
                tail = (out + err).decode(errors="replace")[-2000:]
                parts.append(f"--- container log tail:\n{tail}")
            except docker.errors.APIError:
                pass
        parts.append(f"--- engine log tail:\n{self.engine.log_tail(30)}")
        return "\n".join(parts)

    def remove(self) -> None:
        if self.container is not None:
            try:
                self.container.stop(force=True, delete_volume=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError:
                self.engine.docker("rm", "-f", "-v", self.name, check=False,
                                   timeout=TIMEOUTS.pod_delete)
        self.container = None
        self.id = None
