"""A fleet of nodes: the nodes a run checks one by one, and one probe pod per node × class.

On a real cluster nodes differ (kernel, containerd, which handlers are installed), so a
certifying run pins pods to every selected node with ``nodeName`` instead of taking the
node the scheduler picks. Starting those pods is the slow part (seconds each), so it is
done here for the whole fleet at once, in a thread pool bounded by the node parallelism:
each cell (node, runtime) ends as a running pod with the probe's report, as *missing*
(the node lacks the handler, or the class's scheduling excludes the node: reported for
that node and class only) or as a *broken* start whose reason the checks of that cell fail
with. The API answers concurrent requests, so a bound of N keeps N pod starts in flight.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sandcheck.catalog import Runtime
from sandcheck.clusters.base import Backend, KubernetesBackend, Pod, PodSpec
from sandcheck.errors import ComponentError, UserError
from sandcheck.timeouts import TIMEOUTS

ALL = "all"
MISSING_PREFIX = "missing on node "
"""How a skip for a node lacking a handler starts (reports read it back:
sandcheck/reports/matrix.py)."""
# A start that fails with one of these means "this class cannot run on this node": the
# node has no such handler (sandbox event), or kubelet refused the pod because the class's
# scheduling (merged into the pod's nodeSelector) excludes the node.
_MISSING_MARKERS = ("no runtime for", "RuntimeHandler", "runtime handler", "NodeAffinity",
                    "not supported")


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


def node_fingerprint(node_obj: Any) -> dict[str, Any]:
    """What the node's status says about it (pure over the client's V1Node)."""
    info = node_obj.status.node_info
    return {"kernel": info.kernel_version, "kubelet": info.kubelet_version,
            "container_runtime": info.container_runtime_version, "os_image": info.os_image,
            "architecture": info.architecture}


@dataclass
class Cell:
    """One node × runtime: a running probe pod, or why there is none."""

    node: str
    runtime: Runtime
    pod: Pod | None = None
    probe: dict[str, Any] | None = None
    missing: str | None = None
    broken: str | None = None
    seconds: float = 0.0


@dataclass
class Fleet:
    """The selected nodes and their cells; owns the cells' pods until ``close()``."""

    selector: str
    nodes: list[str]
    parallelism: int
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)
    fingerprints: dict[str, dict[str, Any]] = field(default_factory=dict)
    wall_seconds: float = 0.0

    def cell(self, node: str, runtime: Runtime) -> Cell | None:
        return self.cells.get((node, runtime.name))

    def environment(self) -> dict[str, Any]:
        return {"node_selection": self.selector, "node_parallelism": self.parallelism,
                "node_fingerprints": self.fingerprints,
                "fleet_start_seconds": round(self.wall_seconds, 2),
                "fleet_cells": {f"{n}/{r}": ("running" if c.pod else
                                             "missing" if c.missing else "broken")
                                for (n, r), c in self.cells.items()}}


def start_fleet(backend: Backend, runtimes: list[Runtime], selector: str, parallelism: int,
                probe: Any) -> Fleet:
    """Select the nodes, read their fingerprints and start one probe pod per node × runtime,
    ``parallelism`` at a time. ``probe(pod) -> dict`` runs the probe in a pod (the caller's,
    so this module needs nothing of sandcheck/fixtures/)."""
    import time

    kube: KubernetesBackend = backend  # type: ignore[assignment]
    started = time.monotonic()
    fleet = Fleet(selector=selector, nodes=select_nodes(kube, selector),
                  parallelism=max(1, parallelism))
    for obj in kube.core.list_node(_request_timeout=TIMEOUTS.api_call).items:
        if obj.metadata.name in fleet.nodes:
            fleet.fingerprints[obj.metadata.name] = node_fingerprint(obj)
    kube.ensure_namespace()  # once, before the threads: every pod goes into it
    lacking = {rt.handler: set(kube.nodes_lacking(rt.handler)) for rt in runtimes}
    lock = threading.Lock()

    def one(node: str, rt: Runtime) -> None:
        cell = Cell(node=node, runtime=rt)
        t0 = time.monotonic()
        if rt.name in backend.missing_runtimes:
            cell.missing = missing_reason(node, rt, backend.missing_runtimes[rt.name])
        elif node in lacking[rt.handler]:
            cell.missing = missing_reason(node, rt, "the handler is not installed there")
        else:
            try:
                cell.pod = backend.create_pod(PodSpec(runtime=rt, name_prefix=f"fleet-{rt.name}",
                                                      node_name=node))
                cell.probe = probe(cell.pod)
            except ComponentError as exc:
                text = str(exc)
                first = text.split("\n", 1)[0]
                if means_missing(text):
                    cell.missing = missing_reason(node, rt, first)
                else:
                    cell.broken = f"{rt.name} on node {node}: {first}"
        cell.seconds = time.monotonic() - t0
        with lock:
            fleet.cells[(node, rt.name)] = cell

    with ThreadPoolExecutor(max_workers=fleet.parallelism,
                            thread_name_prefix="sandcheck-fleet") as pool:
        for future in [pool.submit(one, node, rt) for node in fleet.nodes for rt in runtimes]:
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


def close_fleet(backend: Backend, fleet: Fleet) -> None:
    """Delete the cells' pods, ``parallelism`` at a time (each delete waits for the pod)."""
    pods = [c.pod for c in fleet.cells.values() if c.pod is not None]
    with ThreadPoolExecutor(max_workers=fleet.parallelism) as pool:
        list(pool.map(backend.delete_pod, pods))
    for cell in fleet.cells.values():
        cell.pod = None
