"""The backend contract: what every backend offers a suite, and what some offer more.

A suite asks for "a pod of runtime class X" and gets a Pod to exec into; it never knows
which backend made it. What differs between backends is declared, not probed: each
backend lists its Capabilities, and a suite that needs one asks through
``fixtures.pods.require`` (which skips, naming what is missing and how to get it).
"""

from __future__ import annotations

import enum
import itertools
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from sandcheck.catalog import Runtime
from sandcheck.containerd.images import ProbeImage
from sandcheck.errors import ComponentError
from sandcheck.host.footprint import Footprint
from sandcheck.progress import Progress, quiet
from sandcheck.timeouts import TIMEOUTS

RUN_LABEL = "sandcheck.dev/run"
"""Every pod, namespace and sandbox the suite creates carries this label (the run id)."""
RUNTIME_LABEL = "sandcheck.dev/runtime"

_counter = itertools.count()


def new_run_id() -> str:
    return time.strftime("%Y%m%d%H%M%S") + "-" + uuid.uuid4().hex[:6]


def unique_name(prefix: str) -> str:
    """DNS-1123 names unique across processes (xdist workers) and runs."""
    return f"{prefix}-{os.getpid() % 100000}-{next(_counter)}-{uuid.uuid4().hex[:4]}"[:63]


class Capability(enum.Enum):
    """What a backend can show beyond exec into a pod. The value: (what it gives, which
    backends have it), for skip reasons."""

    KUBERNETES_API = ("a Kubernetes API (RuntimeClass admission, kubectl describe, events, "
                      "scheduling)",
                      "--backend local, kind or --backend kubeconfig --kubeconfig PATH")
    HOST_PROCESSES = ("the pod's host processes (shim, sandbox, VM) on this machine",
                      "--backend node, local, docker or kind")
    CRI_INSPECT = ("containerd's own record of the pod (CRI inspect: handler, timestamps, "
                   "cgroups)", "--backend node, local or kind")
    NODE_CGROUPS = ("the pod's cgroups on this machine",
                    "--backend node, local, docker or kind")
    CRI_DIRECT = ("direct CRI calls to a containerd no kubelet manages (crictl)",
                  "--backend node")
    NODE_IS_HOST = ("pods that run on this machine's kernel and /proc",
                    "--backend node, local, docker or kind")
    DOCKER_CLI = ("direct calls to the Docker engine (the docker CLI)", "--backend docker")
    NODE_IMAGES = ("images built here imported into the cluster nodes' containerd, and their "
                   "pulls routed to a registry on this machine",
                   "--backend local, or --backend kind on a cluster the run creates")
    RUN_FOOTPRINT = ("the run's own daemons, cgroups, mounts and network namespaces on this "
                     "machine, for a soak to count", "--backend node or local")
    SIMULATED_NODES = ("simulated nodes whose pods replay what real cells on this machine "
                       "printed (recording_node, serve_logs, default_node_selector)",
                       "--backend kwok")
    CONTROL_PLANE_PROCESSES = ("a control plane whose processes run on this machine (their "
                               "memory: component_memory)", "--backend local or kwok")

    @property
    def gives(self) -> str:
        return self.value[0]

    @property
    def where(self) -> str:
        return self.value[1]


def lacking(backend: Backend, capability: Capability) -> str | None:
    """Why ``backend`` cannot serve ``capability`` (None when it can)."""
    if capability in backend.capabilities:
        return None
    return (f"needs {capability.gives}; the {backend.name} backend has none: run with "
            f"{capability.where}")


class Refused(ComponentError):
    """The API refused an object (admission, validation): its HTTP status and message."""

    def __init__(self, status: int, message: str, body: str = ""):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.body = body


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
    allow_privilege_escalation: bool | None = None
    """False sets no_new_privs (Kubernetes' allowPrivilegeEscalation); None leaves the
    runtime's default."""
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
    own_clock: dict[str, float] = field(default_factory=dict)
    """Seconds between the engine's own timestamps of the start (``docker inspect``'s
    Created and StartedAt), read after the start: another clock, so not in total()."""

    def total(self) -> float:
        return sum(self.phases.values())

    def against_runtime_clock(self, inspect: dict[str, Any]) -> dict[str, float]:
        """Phases between the harness's clock and the runtime's own timestamps (CRI inspect
        data), for backends whose pods' starts are timed through an API; none here."""
        return {}


@dataclass
class BackendSettings:
    """What every backend factory is given: the run, the runtimes, the probe image the
    fixtures built, and the backend's own options (registry ``Option`` dests)."""

    runtimes: list[Runtime]
    run_id: str
    image: ProbeImage | None = None
    keep: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    progress: Progress = quiet
    image_ref: str | None = None
    """``--image``: pods use this reference, pulled by the nodes (IfNotPresent), instead of
    the probe image loaded by the backend."""


@runtime_checkable
class Pod(Protocol):
    name: str
    spec: PodSpec
    timings: PhaseTimes

    def exec(self, argv: list[str], timeout: float = TIMEOUTS.exec) -> ExecResult: ...

    def diagnostics(self) -> str:
        """Everything that explains a failure: inspect output, events, log tails."""
        ...


@runtime_checkable
class Backend(Protocol):
    name: str
    level: str
    """Where pods are made: "CRI", "Kubernetes", "Docker" (reports put it beside each
    figure)."""
    capabilities: frozenset[Capability]
    runtimes: list[Runtime]
    """The selected runtimes this backend can run."""
    missing_runtimes: dict[str, str]
    """Selected runtimes left out (catalog name -> what is missing and how to get it)."""

    def start(self) -> None: ...

    def stop(self) -> None:
        """Remove everything the run made; safe to call twice and after a failed start."""
        ...

    def environment(self) -> dict[str, Any]: ...

    def create_pod(self, spec: PodSpec) -> Pod: ...

    def delete_pod(self, pod: Pod) -> None: ...

    def node_kernel(self, pod: Pod) -> str | None:
        """The kernel release of the node ``pod`` runs on (None when unknown)."""
        ...

    def host_pids(self, pod: Pod) -> list[int]:
        """HOST_PROCESSES: host processes that exist because of this pod."""
        ...

    def inspect_pod(self, pod: Pod) -> dict[str, Any]:
        """CRI_INSPECT: ``{"sandbox": crictl inspectp, "container": crictl inspect}``."""
        ...


class CriDirectBackend(Backend, Protocol):
    """CRI_DIRECT: a backend whose node's containerd the suite may drive itself."""

    def cri_node(self) -> CriNode:
        """The node's containerd and how this backend configures pods."""
        ...


class FootprintBackend(Backend, Protocol):
    """RUN_FOOTPRINT: a backend that says where its run's resources are on this host."""

    def footprint(self) -> Footprint:
        """The daemons pods pass through and the run's cgroups, mounts, netns, IPAM and
        bridge (sandcheck/host/footprint.py reads them)."""
        ...


class ControlPlaneBackend(Backend, Protocol):
    """CONTROL_PLANE_PROCESSES: a backend that ran its control plane on this machine."""

    def component_memory(self) -> dict[str, dict[str, int]]:
        """Component -> its resident memory now and at its peak, in bytes."""
        ...


class SimulatedNodesBackend(Backend, Protocol):
    """SIMULATED_NODES: a fleet's "all" is the simulated nodes this selector selects."""

    default_node_selector: str


class ImageNodeBackend(Backend, Protocol):
    """NODE_IMAGES: a Kubernetes backend whose nodes' containerd takes the suite's images."""

    def image_node(self) -> ImageNode:
        """The containerd kubelet drives: for images and registry routes only (kubelet
        removes any pod made behind its back)."""
        ...


class DockerBackendProtocol(Backend, Protocol):
    """DOCKER_CLI: a backend whose engine the suite may drive itself."""

    def docker_engine(self) -> DockerEngine:
        """The Docker engine and how this backend configures containers."""
        ...


class ServingRegistry(Protocol):
    """A registry on this machine that a node's pulls are routed to."""

    @property
    def host(self) -> str:
        """Where this host pushes to it (``127.0.0.1:PORT``)."""
        ...

    @property
    def endpoint(self) -> str:
        """The URL the node's containerd pulls from."""
        ...

    def start(self) -> object: ...

    def stop(self) -> None: ...


class ImageNode(Protocol):
    """The containerd of a backend's node(s), for images only: image archives imported,
    every pull routed to a registry on this machine, and what shows that no pull left it."""

    @property
    def default_handler(self) -> str:
        """The handler of pods that name no RuntimeClass."""
        ...

    def import_image(self, archive: Path) -> None:
        """An image archive into CRI's namespace, under the names its index gives."""
        ...

    def serving_registry(self) -> ServingRegistry:
        """The registry this node's pulls can reach, not started yet."""
        ...

    def route_registries(self, server: str) -> str:
        """Send every pull, of any registry host, to ``server``; says which file(s)."""
        ...

    def registry_routes(self) -> dict[str, dict[str, list[str]]]:
        """Registry host configuration per node: host directory -> endpoints."""
        ...

    def pull_logs(self) -> dict[str, str]:
        """containerd's log text, per node."""
        ...


@runtime_checkable
class CriNode(ImageNode, Protocol):
    """A containerd the suite can drive with crictl (or any CRI client, such as critest),
    as its backend drives it."""

    workdir: Path

    @property
    def endpoint(self) -> str:
        """The CRI endpoint (``unix://...``)."""
        ...

    @property
    def containerd_log(self) -> Path: ...

    @property
    def registry_config_path(self) -> Path:
        """containerd's registry host configuration (``config_path``)."""
        ...

    @property
    def nri_socket(self) -> Path:
        """containerd's NRI socket (NRI enabled)."""
        ...

    def crictl(self, *args: str, timeout: float = TIMEOUTS.command, check: bool = True): ...

    def pod_config(self, spec: PodSpec, name: str) -> dict[str, Any]: ...

    def container_config(self, spec: PodSpec) -> dict[str, Any]: ...


@runtime_checkable
class DockerEngine(Protocol):
    """A Docker engine the suite can drive with the docker CLI, as its backend drives it."""

    def docker(self, *args: str, timeout: float = TIMEOUTS.command, check: bool = True): ...

    def cli_create_args(self, spec: PodSpec, name: str) -> list[str]:
        """``docker create`` arguments of the container this backend makes for ``spec``."""
        ...


@runtime_checkable
class KubernetesBackend(Backend, Protocol):
    """KUBERNETES_API: what the RuntimeClass suite asks of a cluster."""

    def submit_pod(self, spec: PodSpec) -> tuple[str, str]:
        """Create a pod without waiting for it (for pods that must not run): (name, ns);
        Refused when the API does not admit it."""
        ...

    def remove_pod(self, name: str, namespace: str) -> None: ...

    def delete_pods(self, pods: list[Pod]) -> None:
        """Delete them all at once, then wait until all are gone."""
        ...

    def read_pod(self, name: str, namespace: str) -> dict[str, Any]: ...

    def pod_object(self, pod: Pod) -> dict[str, Any]:
        """The API's current object of a pod this backend made."""
        ...

    def describe(self, pod: Pod) -> str:
        """``kubectl describe pod`` of a pod this backend made."""
        ...

    def events(self, name: str, namespace: str, reason: str | None = None) -> list[str]:
        """Messages of the events about a pod (of one reason when given)."""
        ...

    def create_runtime_class(self, handler: str, **extra: Any) -> str:
        """A labelled RuntimeClass of a fresh name; returns the name."""
        ...

    def read_runtime_class(self, name: str) -> dict[str, Any]: ...

    def delete_runtime_class(self, name: str) -> None: ...

    def use_image(self, ref: str) -> None:
        """Pods name ``ref`` with pull policy IfNotPresent; the probe is not loaded."""
        ...

    def node_names(self) -> list[str]: ...

    def nodes_lacking(self, handler: str) -> list[str]:
        """Nodes the backend knows to lack ``handler`` while others have it (kind with
        workers); empty when every node has it or the backend cannot tell."""
        ...

    def node_pod_room(self, node: str) -> tuple[int, int]:
        """(the node's allocatable pods, pods bound to it that have not ended)."""
        ...
