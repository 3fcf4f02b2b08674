"""What every backend offers a suite: pods of a runtime class to exec into and inspect.

A suite never knows which backend made its pod. Node (CRI only) and Kubernetes
backends differ in how a pod is made, not in what a test can ask of it.
"""

from __future__ import annotations

import itertools
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

from sandcheck.clusters.catalog import Runtime

RUN_LABEL = "sandcheck.dev/run"
"""Every pod, namespace and sandbox the suite creates carries this label (the run id)."""

_counter = itertools.count()


def new_run_id() -> str:
    return time.strftime("%Y%m%d%H%M%S") + "-" + uuid.uuid4().hex[:6]


def unique_name(prefix: str) -> str:
    """DNS-1123 names unique across processes (xdist workers) and runs."""
    return f"{prefix}-{os.getpid() % 100000}-{next(_counter)}-{uuid.uuid4().hex[:4]}"[:63]


@dataclass(frozen=True)
class Timeouts:
    """Every wait the suite makes, in one place (seconds)."""

    pod_start: float = 120.0
    exec: float = 60.0
    pod_delete: float = 60.0
    cluster_start: float = 300.0
    node_ready: float = 180.0


TIMEOUTS = Timeouts()


@dataclass
class PodSpec:
    """The parts of a pod a suite may ask for; backends translate it to CRI or the API."""

    runtime: Runtime
    name_prefix: str = "probe"
    command: list[str] = field(default_factory=lambda: ["/probe", "sleep"])
    seccomp: str = "RuntimeDefault"
    """RuntimeDefault, Unconfined."""
    privileged: bool = False
    add_capabilities: list[str] = field(default_factory=list)
    drop_capabilities: list[str] = field(default_factory=list)
    run_as_user: int | None = None
    labels: dict[str, str] = field(default_factory=dict)
    runtime_class_name: str | None = None
    """Kubernetes backends: override the RuntimeClass name (None: the catalog's)."""
    node_name: str | None = None
    """Kubernetes backends: bind to this node, bypassing the scheduler."""
    node_selector: dict[str, str] = field(default_factory=dict)
    resources: dict[str, dict[str, str]] = field(default_factory=dict)
    """Container resources, Kubernetes-style: {"limits": {"memory": "64Mi"}}."""


@dataclass
class ExecResult:
    argv: list[str]
    exit_code: int
    stdout: str
    stderr: str
    seconds: float

    def evidence(self) -> dict[str, Any]:
        return {"what": "exec " + " ".join(self.argv), "exit_code": self.exit_code,
                "output": self.stdout[-20000:], "stderr": self.stderr[-4000:],
                "seconds": round(self.seconds, 4)}


@dataclass
class PhaseTimes:
    """Monotonic seconds of each start phase, measured around the real calls."""

    phases: dict[str, float] = field(default_factory=dict)

    def total(self) -> float:
        return sum(self.phases.values())


class Pod(Protocol):
    name: str
    spec: PodSpec
    timings: PhaseTimes

    def exec(self, argv: list[str], timeout: float = TIMEOUTS.exec) -> ExecResult: ...

    def diagnostics(self) -> str: ...


class Backend(Protocol):
    name: str
    kubernetes: bool

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def environment(self) -> dict[str, Any]: ...

    def create_pod(self, spec: PodSpec) -> Pod: ...

    def delete_pod(self, pod: Pod) -> None: ...

    def host_pids(self, pod: Pod) -> list[int]:
        """Host processes that exist because of this pod (shim, sandbox, VM)."""
        ...
