"""Which node of a kind cluster gets which runtime handler, and how RuntimeClasses follow
(pure: names in, plans out).

Heterogeneous on purpose, so the RuntimeClass scheduling checks run for real: the runtimes
on the node's own kernel (runc, crun) go on every node; a sandboxing runtime (gVisor,
Kata) goes only on the first worker, or on the only node. Every node carries the label
``sandcheck.dev/runtime-<name>=true`` of each runtime it has, and the RuntimeClass of a
runtime that is not on every node selects that label (unless the catalog already gives
the class a scheduling of its own).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from sandcheck.catalog import Runtime

LABEL_PREFIX = "sandcheck.dev/runtime-"


def is_control_plane(node: str) -> bool:
    """kind names control-plane nodes ``<cluster>-control-plane[N]``."""
    return re.search(r"-control-plane\d*$", node) is not None


def runtime_label(rt: Runtime) -> str:
    return f"{LABEL_PREFIX}{rt.name}"


def everywhere(rt: Runtime) -> bool:
    """Runtimes on the node's kernel run on every node; sandboxes only where labelled."""
    return rt.isolation.own_kernel is not True


@dataclass(frozen=True)
class NodePlan:
    node: str
    """The node's name (kind's container name, also the Kubernetes node name)."""
    runtimes: tuple[Runtime, ...]

    @property
    def labels(self) -> dict[str, str]:
        return {runtime_label(rt): "true" for rt in self.runtimes}


def plan(nodes: list[str], runtimes: list[Runtime]) -> list[NodePlan]:
    """One plan per node; ``nodes`` lists the control plane first, then the workers."""
    workers = [n for n in nodes if not is_control_plane(n)]
    sandbox_node = workers[0] if workers else nodes[0]
    return [NodePlan(node, tuple(rt for rt in runtimes
                                 if everywhere(rt) or node == sandbox_node))
            for node in nodes]


def scheduled(runtimes: list[Runtime], plans: list[NodePlan]) -> list[Runtime]:
    """The runtimes with the scheduling their RuntimeClass needs on these nodes."""
    out = []
    for rt in runtimes:
        on = [p.node for p in plans if rt in p.runtimes]
        if rt.scheduling is None and len(on) < len(plans):
            rt = replace(rt, scheduling={"nodeSelector": {runtime_label(rt): "true"}})
        out.append(rt)
    return out


def lacking(handler: str, plans: list[NodePlan]) -> list[str]:
    """Nodes without ``handler``."""
    return [p.node for p in plans if all(rt.handler != handler for rt in p.runtimes)]
