"""A fleet of nodes: the nodes a run checks, and one cell pod per node × class.

On a real cluster nodes differ (kernel, containerd, which handlers are installed), so a
certifying run pins pods to every selected node with ``nodeName`` instead of taking the
node the scheduler picks. Starting pods is the slow part (seconds each), so every cell's
pod is started here for the whole fleet at once, in a thread pool bounded by the node
parallelism; wall time is then about cells / parallelism × one cell's start, not a sum over
nodes. A cell's pod (``cellpod``) runs every probe report its checks judge at start and
is read with one log request; one watch for the run (``fleetwatch``) tells each thread
when its pod is ready, gone or refused. A cell ends as a running pod with its reports, as
*missing* (the node lacks the handler, or the class's scheduling excludes the node:
reported for that node and class only) or as a *broken* start whose reason the checks of
that cell fail with. The checks then read the reports instead of exec'ing: a cell costs
about three requests of its own (create, log, delete).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sandcheck.catalog import Runtime
from sandcheck.clusters.base import (
    RUN_LABEL,
    Backend,
    Capability,
    KubernetesBackend,
    PodSpec,
    unique_name,
)
from sandcheck.clusters.cellpod import CELL_LABEL, COLLECTOR, Report, cell_manifest, parse_log
from sandcheck.clusters.fleetwatch import FleetWatch
from sandcheck.clusters.kube import KubePod, node_fingerprint
from sandcheck.clusters.kubeapi import api_message
from sandcheck.clusters.kubestart import HANDLER_MISSING, fatal_problem
from sandcheck.errors import ComponentError, UserError
from sandcheck.timeouts import TIMEOUTS, WaitTimeout, wait_until

ALL = "all"
MISSING_PREFIX = "missing on node "
"""How a skip for a node lacking a handler starts (reports read it back:
sandcheck/reports/matrix.py)."""
# A start that fails with one of these means "this class cannot run on this node": the
# node has no such handler (sandbox event), or kubelet refused the pod because the class's
# scheduling (merged into the pod's nodeSelector) excludes the node.
_MISSING_MARKERS = (*HANDLER_MISSING, "NodeAffinity")


def missing_reason(node: str, runtime: Runtime, why: str) -> str:
    return (f"{MISSING_PREFIX}{node}: RuntimeClass {runtime.runtime_class} (handler "
            f"{runtime.handler}): {why}")


def means_missing(message: str) -> bool:
    return any(marker in message for marker in _MISSING_MARKERS)


def select_nodes(kube: KubernetesBackend, selector: str) -> list[str]:
    """Names of the nodes ``selector`` (``all`` or a label selector) picks, sorted."""
    from kubernetes.client.rest import ApiException

    label_selector = None if selector == ALL else selector
    try:
        items = kube.core.list_node(label_selector=label_selector,
                                    _request_timeout=TIMEOUTS.api_call).items
    except ApiException as exc:
        raise UserError(f"--nodes {selector!r}: the API refused the node list: {exc.status} "
                        f"{exc.reason} (a label selector looks like `pool=sandbox,zone!=a`)"
                        ) from None
    names = sorted(n.metadata.name for n in items)
    if not names:
        raise UserError(f"--nodes {selector!r} matches no node of the cluster")
    return names


@dataclass(frozen=True)
class Companion:
    """A pod of its own that a cell's checks need beside the cell pod: a workload whose
    host processes a check stops or traces, which must not be the cell pod's. A suite
    module lists its companions in ``CELL_COMPANIONS``; the fleet starts them with each
    cell whose backend has ``needs`` and whose runtime ``applies``, in the same pool, so
    they cost no wait per node either. The command's last argument is a marker unique to
    the pod (``marker()``), for finding its processes on the host."""

    name: str
    command: tuple[str, ...]
    needs: Capability
    applies: Callable[[Runtime], bool] = lambda _runtime: True

    def spec(self, runtime: Runtime, node: str | None = None) -> PodSpec:
        marker = f"sandcheck-{self.name}-{uuid.uuid4().hex[:12]}"
        return PodSpec(runtime=runtime, name_prefix=f"{self.name}-{runtime.name}",
                       command=[*self.command, marker], node_name=node)

    @staticmethod
    def marker(pod_spec: PodSpec) -> str:
        return pod_spec.command[-1]


@dataclass
class Cell:
    """One node × runtime: a running cell pod with its reports, or why there is none."""

    node: str
    runtime: Runtime
    pod: KubePod | None = None
    reports: dict[tuple[str, str], Report] = field(default_factory=dict)
    log: str = ""
    """The collector's log as read (a simulated fleet replays it)."""
    missing: str | None = None
    broken: str | None = None
    seconds: float = 0.0
    companions: dict[str, KubePod] = field(default_factory=dict)
    companion_errors: dict[str, str] = field(default_factory=dict)

    def view(self, container: str) -> KubePod | None:
        """The cell pod as one of its containers: exec goes there, and ``reports`` holds
        that container's probe reports by mode (``run_probe`` reads them)."""
        if self.pod is None:
            return None
        view = KubePod(self.pod.cluster, self.pod.spec, self.pod.name, self.pod.namespace,
                       container=container)
        view.uid, view.node_name = self.pod.uid, self.pod.node_name
        view.reports = {mode: r for (c, mode), r in self.reports.items() if c == container}
        return view

    @property
    def probe(self) -> dict[str, Any] | None:
        report = self.reports.get((COLLECTOR, "json"))
        return report.data if report else None


@dataclass
class Fleet:
    """The selected nodes and their cells; owns the cells' pods and the run's watch until
    ``close_fleet()``."""

    selector: str
    nodes: list[str]
    parallelism: int
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)
    fingerprints: dict[str, dict[str, Any]] = field(default_factory=dict)
    wall_seconds: float = 0.0
    watch: FleetWatch | None = None
    recorded: dict[str, Any] | None = None
    """A simulated fleet: the real cells whose logs its pods replay."""

    def cell(self, node: str, runtime: Runtime) -> Cell | None:
        return self.cells.get((node, runtime.name))

    def environment(self) -> dict[str, Any]:
        return {"node_selection": self.selector, "node_parallelism": self.parallelism,
                "node_fingerprints": self.fingerprints,
                "fleet_start_seconds": round(self.wall_seconds, 2),
                **({"fleet_recorded_on": self.recorded} if self.recorded else {}),
                "fleet_cells": {f"{n}/{r}": ("running" if c.pod else
                                             "missing" if c.missing else "broken")
                                for (n, r), c in self.cells.items()}}


def _ready(kind: str | None, obj: dict[str, Any] | None, problem: str | None):
    """What the watch says of a starting cell pod: "ready", a problem, or None (pure)."""
    if problem:
        return ("missing", problem)
    if kind == "DELETED":
        return ("broken", "the pod was deleted before it ran")
    status = (obj or {}).get("status") or {}
    fatal = fatal_problem(status)
    if fatal:
        return ("missing" if means_missing(fatal) else "broken", fatal)
    for cs in status.get("containerStatuses") or []:
        if cs.get("name") == COLLECTOR and cs.get("ready"):
            return ("ready", "")
    return None


def _start_cell(kube: KubernetesBackend, watch: FleetWatch, cell: Cell) -> None:
    """Create the cell's pod, wait for its reports, read them with one log request."""
    from kubernetes.client.rest import ApiException

    rt, node = cell.runtime, cell.node
    spec = PodSpec(runtime=rt, name_prefix=f"cell-{rt.name}", node_name=node)
    name = unique_name(spec.name_prefix)
    body = cell_manifest(spec, name, kube.namespace, kube.run_id, TIMEOUTS.cell_reports,
                         kube.image_ref, kube.pull_policy)
    try:
        created = kube.core.create_namespaced_pod(kube.namespace, body,
                                                  _request_timeout=TIMEOUTS.api_call)
    except ApiException as exc:
        raise ComponentError(f"the API refused the cell pod {name}: {exc.status} "
                             f"{exc.reason}: {api_message(exc)}") from None
    pod = KubePod(kube, spec, name, kube.namespace)
    pod.uid, pod.node_name = created.metadata.uid, node
    cell.pod = pod
    outcome, why = watch.wait(name, _ready, TIMEOUTS.pod_start + TIMEOUTS.cell_reports,
                              f"cell pod {kube.namespace}/{name} ({rt.name} on {node}) "
                              "to report")
    if outcome != "ready":
        raise ComponentError(why)
    cell.log = _read_log(kube, name)
    try:
        cell.reports = parse_log(cell.log)
    except ValueError as exc:
        raise ComponentError(f"cell pod {name}: {exc}") from None


def _read_log(kube: KubernetesBackend, name: str) -> str:
    """The collector's log. A 400 right after the pod turned ready is the log server not
    having caught up with the pod yet (a kubelet's container record, kwok's Logs object):
    asked again within TIMEOUTS.cell_log; any other error ends the cell at once."""
    from kubernetes.client.rest import ApiException

    last: list[ApiException] = []

    def read() -> str | None:
        try:
            return kube.core.read_namespaced_pod_log(name, kube.namespace, container=COLLECTOR,
                                                     _request_timeout=TIMEOUTS.api_call)
        except ApiException as exc:
            if exc.status != 400:
                raise ComponentError(f"reading the log of cell pod {name}: {exc.status} "
                                     f"{exc.reason}: {api_message(exc)}") from None
            last[:] = [exc]
            return None

    try:
        return wait_until(read, TIMEOUTS.cell_log, f"the log of cell pod {name}",
                          interval=TIMEOUTS.slow_poll)
    except WaitTimeout:
        raise ComponentError(f"reading the log of cell pod {name}: still 400 after "
                             f"{TIMEOUTS.cell_log:.0f}s: {api_message(last[0])}") from None


def _start_companions(kube: KubernetesBackend, cell: Cell,
                      companions: list[Companion]) -> None:
    for companion in companions:
        if companion.applies(cell.runtime):
            try:
                cell.companions[companion.name] = kube.create_pod(
                    companion.spec(cell.runtime, cell.node))
            except ComponentError as exc:
                cell.companion_errors[companion.name] = str(exc).split("\n", 1)[0]


def start_fleet(backend: Backend, runtimes: list[Runtime], selector: str, parallelism: int,
                pending: Callable[[list[str]], set[tuple[str, str]] | None] = lambda _: None,
                companions: list[Companion] = ()) -> Fleet:
    """Select the nodes, read their fingerprints and start one cell pod (and the
    ``companions`` the backend can serve) per node × runtime, ``parallelism`` at a time;
    ``pending(nodes)`` gives the (node, runtime) cells with checks still to run (a resumed
    run), None for all."""
    kube: KubernetesBackend = backend  # type: ignore[assignment]
    started = time.monotonic()
    fleet = Fleet(selector=selector, nodes=select_nodes(kube, selector),
                  parallelism=max(1, parallelism))
    for obj in kube.core.list_node(_request_timeout=TIMEOUTS.api_call).items:
        if obj.metadata.name in fleet.nodes:
            fleet.fingerprints[obj.metadata.name] = node_fingerprint(obj)
            kube.node_kernels[obj.metadata.name] = obj.status.node_info.kernel_version
    kube.ensure_namespace()  # once, before the threads: every pod goes into it
    lacking = {rt.handler: set(kube.nodes_lacking(rt.handler)) for rt in runtimes}
    companions = [c for c in companions if c.needs in backend.capabilities]
    lock = threading.Lock()
    fleet.watch = FleetWatch(kube.core, kube.namespace,
                             f"{RUN_LABEL}={kube.run_id},{CELL_LABEL}=true").__enter__()

    def one(node: str, rt: Runtime) -> None:
        cell = Cell(node=node, runtime=rt)
        t0 = time.monotonic()
        if rt.name in backend.missing_runtimes:
            cell.missing = missing_reason(node, rt, backend.missing_runtimes[rt.name])
        elif node in lacking[rt.handler]:
            cell.missing = missing_reason(node, rt, "the handler is not installed there")
        else:
            try:
                _start_cell(kube, fleet.watch, cell)
                _start_companions(kube, cell, companions)
            except ComponentError as exc:
                text = str(exc)
                first = text.split("\n", 1)[0]
                if means_missing(text):
                    cell.missing = missing_reason(node, rt, first)
                else:
                    cell.broken = f"{rt.name} on node {node}: {first}"
                if cell.pod is not None:
                    _delete(kube, fleet.watch, cell.pod, wait=False)
                    cell.pod = None
        cell.seconds = time.monotonic() - t0
        with lock:
            fleet.cells[(node, rt.name)] = cell

    if Capability.SIMULATED_NODES in backend.capabilities:
        fleet.recorded = _record(kube, fleet.watch, runtimes)
    wanted = pending(fleet.nodes)
    todo = [(node, rt) for node in fleet.nodes for rt in runtimes
            if wanted is None or (node, rt.name) in wanted]
    with ThreadPoolExecutor(max_workers=fleet.parallelism,
                            thread_name_prefix="sandcheck-fleet") as pool:
        for future in [pool.submit(one, node, rt) for node, rt in todo]:
            future.result()
    for node in fleet.nodes:
        native = next((c for (n, _), c in fleet.cells.items() if n == node and c.probe
                       and c.runtime.isolation.own_kernel is False), None)
        if native is not None:
            release = (native.probe.get("uname") or {}).get("release")
            fleet.fingerprints.setdefault(node, {})["kernel_in_native_pod"] = release
            fleet.fingerprints[node]["native_runtime"] = native.runtime.name
    fleet.wall_seconds = time.monotonic() - started
    return fleet


def _record(kube: Any, watch: FleetWatch, runtimes: list[Runtime]) -> dict[str, Any]:
    """A simulated fleet's pods replay what real ones printed: one real cell per runtime
    on the backend's real node, its log handed to the backend to serve (so the checks of
    simulated cells judge real reports). Returns what was recorded, for the environment."""
    node = kube.recording_node
    recordings: dict[str, dict[str, str]] = {}
    recorded: dict[str, Any] = {"node": node, "cells": {}}
    for rt in runtimes:
        if rt.name in kube.missing_runtimes:
            continue
        cell = Cell(node=node, runtime=rt)
        try:
            _start_cell(kube, watch, cell)
        except ComponentError as exc:
            raise ComponentError(f"recording a real {rt.name} cell on {node} for the "
                                 f"simulated nodes to replay: {exc}") from None
        finally:
            if cell.pod is not None:
                _delete(kube, watch, cell.pod)
        recordings[rt.name] = {COLLECTOR: cell.log}
        recorded["cells"][rt.name] = {"pod": cell.pod.name if cell.pod else None,
                                      "log_bytes": len(cell.log)}
    kube.serve_logs(recordings)
    return recorded


def _delete(kube: KubernetesBackend, watch: FleetWatch, pod: KubePod, wait: bool = True
            ) -> None:
    """Delete a cell pod (its own short grace); with ``wait``, until the watch sees it
    gone, so the runtime's processes are gone too."""
    kube.delete_pod(pod, wait=False)
    if wait:
        try:
            watch.wait(pod.name, lambda kind, obj, _: True if kind == "DELETED" else None,
                       TIMEOUTS.pod_delete, f"cell pod {pod.namespace}/{pod.name} to go")
        except ComponentError:
            pass  # the namespace goes with the run; its pods with it
    watch.forget(pod.name)


def close_fleet(backend: Backend, fleet: Fleet) -> None:
    """Ask for the deletion of the cells' pods and companions, ``parallelism`` requests at
    a time, then stop the watch. Nothing waits for each to go: the run's namespace goes
    next, and its deletion waits for every pod in it."""
    kube: KubernetesBackend = backend  # type: ignore[assignment]
    pods = [c.pod for c in fleet.cells.values() if c.pod is not None]
    others = [p for c in fleet.cells.values() for p in c.companions.values()]
    with ThreadPoolExecutor(max_workers=fleet.parallelism) as pool:
        if fleet.watch is not None:
            list(pool.map(lambda pod: _delete(kube, fleet.watch, pod, wait=False), pods))
        list(pool.map(lambda pod: kube.delete_pod(pod, wait=False), others))
    if fleet.watch is not None:
        fleet.watch.close()
        fleet.watch = None
    for cell in fleet.cells.values():
        cell.pod = None
        cell.companions.clear()
