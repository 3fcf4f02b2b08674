"""Pods of a runtime class on a Kubernetes cluster, through the API: what the local, kind
and kubeconfig backends share.

``KubeCluster`` joins the parts (API client ``kubeapi``, evidence ``kubeevidence``, the
run's namespace ``kubenamespace``, RuntimeClasses ``kuberuntimeclasses``) and holds the
pods' life: a pod made from a PodSpec (``kubemanifest``) with the probe image and
``imagePullPolicy: Never``, its start timed through a watch opened before the create call
(``podwatch``, ``kubestart``, ``starttimes``; never from the pod's whole-second condition
timestamps), exec (``kubeexec``), and deletion that waits until the runtime's processes
went with the pod. A failure carries the pod's events, ``kubectl describe`` and the
backend's component log tails.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sandcheck.catalog import Runtime
from sandcheck.clusters import kubeexec
from sandcheck.clusters.base import (
    Capability,
    ExecResult,
    PhaseTimes,
    PodSpec,
    Refused,
    unique_name,
)
from sandcheck.clusters.cellpod import CELL_LABEL
from sandcheck.clusters.kubeapi import api_message, gone
from sandcheck.clusters.kubemanifest import pod_manifest
from sandcheck.clusters.kubenamespace import KubeNamespace, namespace_for
from sandcheck.clusters.kuberuntimeclasses import KubeRuntimeClasses
from sandcheck.clusters.kubestart import wait_running
from sandcheck.clusters.podwatch import PodWatch
from sandcheck.clusters.starttimes import WatchedStart, event_marks, watched_start
from sandcheck.containerd.images import PROBE_IMAGE
from sandcheck.errors import ComponentError
from sandcheck.progress import Progress, quiet
from sandcheck.timeouts import TIMEOUTS


def node_fingerprint(node_obj: Any) -> dict[str, Any]:
    """What the node's status says about it (pure over the client's V1Node)."""
    info = node_obj.status.node_info
    return {"kernel": info.kernel_version, "kubelet": info.kubelet_version,
            "container_runtime": info.container_runtime_version, "os_image": info.os_image,
            "architecture": info.architecture}


def split_descriptions(text: str) -> dict[str, str]:
    """Pod name -> its part of a ``kubectl describe pods`` of several (pure): each part
    starts with its ``Name:`` line."""
    parts = re.split(r"(?m)^(?=Name:\s)", text)
    found = {}
    for part in parts:
        first = part.split("\n", 1)[0]
        if first.startswith("Name:"):
            found[first.split(":", 1)[1].strip()] = part.rstrip("\n") + "\n"
    return found


class KubePod:
    """A pod reached through the API; ``container`` is the one exec runs in (a fleet's
    cell pod has several: sandcheck/clusters/cellpod.py)."""

    def __init__(self, cluster: KubeCluster, spec: PodSpec, name: str, namespace: str,
                 container: str = "probe"):
        self.cluster = cluster
        self.spec = spec
        self.name = name
        self.namespace = namespace
        self.container = container
        self.reports: dict[str, Any] | None = None
        """A cell pod's container: its probe reports by mode, made at start."""
        self.timings: PhaseTimes = WatchedStart()
        self.uid: str | None = None
        self.node_name: str | None = None

    def exec(self, argv: list[str], timeout: float = TIMEOUTS.exec) -> ExecResult:
        return self.cluster.exec_in_pod(self, argv, timeout)

    def read(self) -> dict[str, Any]:
        return self.cluster.read_pod(self.name, self.namespace)

    def describe(self) -> str:
        return self.cluster.describe_pod(self.name, self.namespace)

    def inspect(self) -> dict[str, Any]:
        """containerd's own view (sandbox, container) where the backend can reach the node."""
        return self.cluster.inspect_pod(self)

    def events(self) -> str:
        return self.cluster.pod_events_text(self.name, self.namespace)

    def diagnostics(self) -> str:
        return self.cluster.pod_diagnostics(self.name, self.namespace,
                                            runtime=self.spec.runtime.name)


class KubeCluster(KubeNamespace, KubeRuntimeClasses):
    """API-side pod handling shared by the Kubernetes backends.

    Subclasses set ``kubeconfig_path`` before calling ``connect()`` and may override
    ``component_logs()`` (name -> log tail) for the evidence of failures.
    """

    name = "kubernetes"
    level = "Kubernetes"
    capabilities = frozenset({Capability.KUBERNETES_API})
    step_label = "cluster"
    """How bring-up progress lines name this backend."""

    def __init__(self, runtimes: list[Runtime], run_id: str, image_ref: str = PROBE_IMAGE,
                 progress: Progress = quiet):
        self.runtimes = list(runtimes)
        self.run_id = run_id
        self.image_ref = image_ref
        self.pull_policy = "Never"
        """Never while the backend loads the probe itself; IfNotPresent with --image."""
        self.progress = progress
        self.missing_runtimes: dict[str, str] = {}
        """Selected runtimes left out before any pod (binaries a node lacks)."""
        self.namespace = namespace_for(run_id)
        self.kubeconfig_path: Path | None = None
        self.api_client = None
        self.verified: dict[str, Any] = {}
        """Handler -> how it was verified (a pod of its class ran)."""
        self.missing_handlers: dict[str, str] = {}
        """Handler -> why pods of its class cannot start on this cluster."""
        self.created_runtime_classes: list[str] = []
        self._namespace_ready = False
        self.timings: dict[str, float] = {}
        """Bring-up step -> monotonic seconds (``_step``), for the environment."""
        self._described: dict[str, dict[str, str]] = {}
        self._described_lock = threading.Lock()
        self.node_kernels: dict[str, str] = {}
        """Node -> kernel release, read once per node (a node's kernel does not change
        during a run; a fleet's checks ask for it per cell)."""

    def _step(self, timing: str, step: Callable[[], object]) -> None:
        """Run one bring-up step, record its monotonic seconds and report them."""
        mark = time.monotonic()
        step()
        self.timings[timing] = time.monotonic() - mark
        self.progress(f"{self.step_label}: {timing.removesuffix('_seconds').replace('_', ' ')} "
                      f"in {self.timings[timing]:.1f}s")

    def nodes_fingerprint(self) -> list[dict[str, Any]] | str:
        """Every node's name and what its status says of it; the error text (evidence
        only) when the API cannot list them."""
        try:
            items = self.core.list_node(_request_timeout=TIMEOUTS.api_call).items
        except Exception as exc:
            return f"not readable: {exc}"
        return [{"name": n.metadata.name, **node_fingerprint(n)} for n in items]

    # -- images ------------------------------------------------------------------------------

    def use_image(self, ref: str) -> None:
        """Pods name ``ref``, which nodes pull if they lack it; backends that load the
        probe themselves skip that when ``image_from_registry``."""
        self.image_ref = ref
        self.pull_policy = "IfNotPresent"

    @property
    def image_from_registry(self) -> bool:
        return self.pull_policy != "Never"

    def image_environment(self) -> dict[str, str]:
        """Which image the pods named and how nodes got it (evidence in every report)."""
        return {"probe_image": self.image_ref, "image_pull_policy": self.pull_policy}

    # -- pods ----------------------------------------------------------------------------------

    def create_pod(self, spec: PodSpec) -> KubePod:
        from kubernetes.client.rest import ApiException

        handler = spec.runtime.handler
        if handler in self.missing_handlers and spec.runtime_class_name is None:
            raise ComponentError(f"handler {handler!r} is not usable on this cluster: "
                                 f"{self.missing_handlers[handler]}")
        namespace = self.ensure_namespace()
        name = unique_name(spec.name_prefix)
        pod = KubePod(self, spec, name, namespace)
        body = pod_manifest(spec, name, namespace, self.run_id, self.image_ref,
                            self.pull_policy)
        with PodWatch(self.core, namespace, name, TIMEOUTS.pod_start) as watch:
            start, anchor = time.monotonic(), time.time_ns()
            try:
                created = self.core.create_namespaced_pod(namespace, body,
                                                          _request_timeout=TIMEOUTS.api_call)
            except ApiException as exc:
                raise ComponentError(f"the API refused pod {name} "
                                     f"(runtimeClassName {body['spec']['runtimeClassName']}): "
                                     f"{exc.status} {exc.reason}: {api_message(exc)}") from None
            pod.uid = created.metadata.uid
            try:
                arrivals = wait_running(
                    watch, start, TIMEOUTS.pod_start, f"{namespace}/{name} ({spec.runtime.name})",
                    events=lambda: self._events(name, namespace),
                    diagnostics=lambda: self.pod_diagnostics(name, namespace, spec.runtime.name))
            except BaseException:
                self.delete_pod(pod, wait=False)
                raise
        pod.timings = watched_start(arrivals, anchor)
        pod.timings.marks += event_marks(self._event_dicts(name, namespace), pod.timings)
        pod.timings.marks.sort(key=lambda m: m.seconds)
        pod.node_name = (arrivals[-1][1].get("spec") or {}).get("nodeName")
        return pod

    def inspect_pod(self, pod: KubePod) -> dict[str, Any]:
        return {}

    def node_kernel(self, pod: KubePod) -> str | None:
        """The kernel release the pod's node reports (for clusters that are not this host)."""
        node = pod.node_name or (pod.read().get("spec") or {}).get("nodeName")
        if not node:
            return None
        if node not in self.node_kernels:
            info = self.core.read_node(node, _request_timeout=TIMEOUTS.api_call).status.node_info
            self.node_kernels[node] = info.kernel_version
        return self.node_kernels[node]

    def read_pod(self, name: str, namespace: str) -> dict[str, Any]:
        from kubernetes.client.rest import ApiException

        try:
            obj = self.core.read_namespaced_pod(name, namespace, _request_timeout=TIMEOUTS.api_call)
        except ApiException as exc:
            raise ComponentError(f"reading pod {namespace}/{name}: {exc.status} "
                                 f"{exc.reason}") from None
        return self.api_client.sanitize_for_serialization(obj)

    def delete_pod(self, pod: KubePod, wait: bool = True) -> None:
        from kubernetes.client.rest import ApiException

        if self.api_client is None:
            return
        # A graceful delete (the pod's own 1 s grace): the object goes only once kubelet
        # has stopped its containers and sandbox; grace 0 would drop the object at once
        # and leave the runtime's processes to die later.
        try:
            self.core.delete_namespaced_pod(pod.name, pod.namespace,
                                            _request_timeout=TIMEOUTS.api_call)
        except ApiException:
            return
        except Exception:
            return
        if not wait:
            return
        # The runtime's processes go with the pod: wait for the API object to be gone so
        # the next measurement does not see them.
        gone(lambda: self.core.read_namespaced_pod(
            pod.name, pod.namespace, _request_timeout=TIMEOUTS.api_call), TIMEOUTS.pod_delete)

    def delete_pods(self, pods: list[KubePod]) -> None:
        """Delete them all, then wait until all are gone: their kubelets stop them at
        once, so the wait is one pod's, not the sum."""
        if self.api_client is None:
            return
        for pod in pods:
            self.delete_pod(pod, wait=False)
        for pod in pods:
            gone(lambda pod=pod: self.core.read_namespaced_pod(
                pod.name, pod.namespace, _request_timeout=TIMEOUTS.api_call),
                TIMEOUTS.pod_delete)

    def exec_in_pod(self, pod: KubePod, argv: list[str], timeout: float) -> ExecResult:
        return kubeexec.exec_in_pod(self.api_client, pod.name, pod.namespace, argv, timeout,
                                    container=pod.container)

    def host_pids(self, pod: KubePod) -> list[int]:
        return []

    # -- what the RuntimeClass suite asks (KubernetesBackend) -------------------------------

    def submit_pod(self, spec: PodSpec) -> tuple[str, str]:
        """Create a pod without waiting (for pods that must not run); the API's refusal
        comes back as ApiException. Deleted with the run's namespace at the latest."""
        from kubernetes.client.rest import ApiException

        namespace = self.ensure_namespace()
        name = unique_name(spec.name_prefix)
        try:
            self.core.create_namespaced_pod(namespace, pod_manifest(
                spec, name, namespace, self.run_id, self.image_ref, self.pull_policy),
                _request_timeout=TIMEOUTS.api_call)
        except ApiException as exc:
            raise Refused(exc.status, api_message(exc), exc.body or "") from None
        return name, namespace

    def remove_pod(self, name: str, namespace: str) -> None:
        from kubernetes.client.rest import ApiException

        try:
            self.core.delete_namespaced_pod(name, namespace, grace_period_seconds=0,
                                            _request_timeout=TIMEOUTS.api_call)
        except ApiException as exc:
            if exc.status != 404:
                raise ComponentError(f"deleting pod {namespace}/{name}: {exc.status} "
                                     f"{exc.reason}") from None

    def pod_object(self, pod: KubePod) -> dict[str, Any]:
        return self.read_pod(pod.name, pod.namespace)

    def describe(self, pod: KubePod) -> str:
        """``kubectl describe pod``. A fleet's cell pods are described all at once, by one
        kubectl run over the cell label: a kubectl process per cell costs a third of a
        second of CPU, which for 3,000 cells is longer than the rest of the run."""
        if pod.reports is not None:
            text = self._cell_descriptions(pod.namespace).get(pod.name)
            if text is not None:
                return text
        return self.describe_pod(pod.name, pod.namespace)

    def _cell_descriptions(self, namespace: str) -> dict[str, str]:
        with self._described_lock:
            if namespace not in self._described:
                proc = self.kubectl("describe", "pods", "-n", namespace, "-l",
                                    f"{CELL_LABEL}=true", timeout=TIMEOUTS.bulk_describe)
                self._described[namespace] = split_descriptions(proc.stdout) \
                    if proc is not None and proc.returncode == 0 else {}
            return self._described[namespace]

    def node_names(self) -> list[str]:
        return [n.metadata.name for n in
                self.core.list_node(_request_timeout=TIMEOUTS.api_call).items]

    def nodes_lacking(self, handler: str) -> list[str]:
        """Unknown on a cluster whose nodes this backend did not set up."""
        return []

    def node_pod_room(self, node: str) -> tuple[int, int]:
        """(pods the node's kubelet admits: its allocatable ``pods``, pods bound to it that
        have not ended, of any namespace)."""
        allocatable = self.core.read_node(node, _request_timeout=TIMEOUTS.api_call
                                          ).status.allocatable or {}
        bound = self.core.list_pod_for_all_namespaces(
            field_selector=f"spec.nodeName={node},status.phase!=Succeeded,status.phase!=Failed",
            _request_timeout=TIMEOUTS.api_call).items
        return int(allocatable.get("pods", 0)), len(bound)

    def handler_check(self, timeout: float = TIMEOUTS.pod_start) -> dict[str, str]:
        """Start one pod per selected runtime class; handler -> problem for those that fail."""
        problems: dict[str, str] = {}
        for rt in self.runtimes:
            spec = PodSpec(runtime=rt, name_prefix=f"check-{rt.name}"[:40])
            try:
                pod = self.create_pod(spec)
            except ComponentError as exc:
                problems[rt.handler] = str(exc).split("\n", 1)[0]
                self.missing_handlers[rt.handler] = problems[rt.handler]
                continue
            self.verified[rt.handler] = f"pod {pod.name} of RuntimeClass " \
                                        f"{rt.runtime_class} ran on {pod.node_name}"
            self.delete_pod(pod)
        return problems
