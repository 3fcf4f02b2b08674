"""kwok's configuration for the kwok backend (pure): which nodes its controller manages,
its server, and the stages that play the simulated nodes' and pods' lifecycle.

kwok's controller binary plays no lifecycle of its own: every change it makes to a node or
a pod is a Stage of its ``--config`` (kwok refuses to start with none). The stages here are
the backend's own, written for what the suites ask of a node and a pod:

* a node of the fleet that is not Ready becomes Ready (kubelet's four conditions), and
  every ``TIMEOUTS.simulated_node_status`` its conditions get a new heartbeat time; in
  between, the node's Lease (renewed by kwok every quarter of
  ``TIMEOUTS.simulated_node_lease``) keeps the node lifecycle controller content, as a
  real kubelet's lease does;
* a pending pod on a fleet node becomes Running with every container started and ready,
  at once. A pod the suite made (it carries ``RUNTIME_LABEL``) waits until the backend has
  made the pod's ``Logs`` object and marked it with ``SERVED_ANNOTATION``, so that no log
  request ever comes before kwok knows which recording to answer with (``logs``);
* a pod being deleted is removed at once, as kubelet does once its containers stopped.

Everything else a node or a pod shows (capacity, node info, runtime handlers, addresses,
the server's port) is written by the backend when it creates the node (``nodes``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from sandcheck.clusters.base import RUNTIME_LABEL
from sandcheck.timeouts import TIMEOUTS

CONFIG_API = "config.kwok.x-k8s.io/v1alpha1"
STAGE_API = "kwok.x-k8s.io/v1alpha1"
SIMULATED_LABEL = ("type", "kwok")
"""The label of the fleet's nodes: kwok manages the nodes that carry it, the backend's
default node selection picks them."""
SIMULATED_SELECTOR = "=".join(SIMULATED_LABEL)
SERVED_ANNOTATION = "sandcheck.dev/kwok-logs"
"""Set on a suite's pod once its Logs object exists; kwok makes the pod Running only then."""
LOGS_KIND = "Logs"
"""kwok's per-pod log resource, watched as a CRD (``--enable-crds``): pods are chosen by
name, which only exists once a pod does (kwok's ClusterLogs choose pods by namespace and
name only, never by label, so they cannot tell a runc pod from a runsc pod)."""

KWOK_CIDR = "10.0.0.0/24"
"""kwok's pod IP pool for a node without a podCIDR (none of the backend's)."""
PARALLELISM = 4
"""kwok's default workers per kind of work (leases, node stages, pod stages)."""

NODE_CONDITIONS = (
    ("Ready", "True", "KubeletReady", "kwok is posting ready status for this simulated node"),
    ("MemoryPressure", "False", "KubeletHasSufficientMemory", "simulated node"),
    ("DiskPressure", "False", "KubeletHasNoDiskPressure", "simulated node"),
    ("PIDPressure", "False", "KubeletHasSufficientPID", "simulated node"),
)
"""kubelet's conditions of a healthy node (type, status, reason, message)."""
POD_CONDITIONS = ("PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready",
                  "PodScheduled")


def _millis(seconds: float) -> int:
    return int(seconds * 1000)


def kwok_configuration(*, server_address: str, cert: Path, key: Path) -> dict[str, Any]:
    """The controller's options: the fleet's nodes by label, leases as kubelet keeps them,
    its server (pod logs) over TLS with the run's certificate, Logs objects as a CRD."""
    return {
        "apiVersion": CONFIG_API,
        "kind": "KwokConfiguration",
        "metadata": {"name": "sandcheck"},
        "options": {
            "manageNodesWithLabelSelector": SIMULATED_SELECTOR,
            "nodeLeaseDurationSeconds": int(TIMEOUTS.simulated_node_lease),
            "serverAddress": server_address,
            "tlsCertFile": str(cert),
            "tlsPrivateKeyFile": str(key),
            "enableCRDs": [LOGS_KIND],
            "enableDebuggingHandlers": True,
            "enableProfilingHandler": False,
            "enableContentionProfiling": False,
            # A configuration file gets none of the flags' defaults: kwok's own, spelled out.
            "cidr": KWOK_CIDR,
            "manageAllNodes": False,
            "nodeLeaseParallelism": PARALLELISM,
            "nodePlayStageParallelism": PARALLELISM,
            "podPlayStageParallelism": PARALLELISM,
            "podsOnNodeSyncParallelism": 1,
            "enablePodsOnNodeSyncListPager": True,
            "enablePodsOnNodeSyncStreamWatch": False,
        },
    }


def _stage(name: str, kind: str, expressions: list[dict[str, Any]],
           next_: dict[str, Any], delay_seconds: float | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"resourceRef": {"apiGroup": "v1", "kind": kind},
                            "selector": {"matchExpressions": expressions}, "next": next_}
    if delay_seconds is not None:
        # kwok waits a random time between the two before it plays the stage.
        spec["delay"] = {"durationMilliseconds": _millis(delay_seconds),
                         "jitterDurationMilliseconds": _millis(delay_seconds * 1.1)}
    return {"apiVersion": STAGE_API, "kind": "Stage", "metadata": {"name": name},
            "spec": spec}


def _expr(key: str, operator: str, *values: str) -> dict[str, Any]:
    return {"key": key, "operator": operator, **({"values": list(values)} if values else {})}


READY_STATUS = '.status.conditions.[] | select(.type == "Ready") | .status'


def node_ready_template() -> str:
    """kwok's status patch that makes a node Ready (a Go template)."""
    lines = ["{{ $now := Now }}", "conditions:"]
    for kind, status, reason, message in NODE_CONDITIONS:
        lines += [f"- type: {kind}", f'  status: "{status}"', f"  reason: {reason}",
                  f"  message: {message}", "  lastHeartbeatTime: {{ $now | Quote }}",
                  "  lastTransitionTime: {{ $now | Quote }}"]
    return "\n".join(lines) + "\n"


def node_heartbeat_template() -> str:
    """A new heartbeat time on each condition; the status patch merges by type, so every
    other field of the conditions stays."""
    return "\n".join(["{{ $now := Now }}", "conditions:", "{{ range .status.conditions }}",
                      "- type: {{ .type | Quote }}", "  lastHeartbeatTime: {{ $now | Quote }}",
                      "{{ end }}"]) + "\n"


def pod_running_template() -> str:
    """Every container started and ready, init containers completed, the node's and a pod
    IP (kwok's pool of the node's podCIDR), phase Running."""
    lines = ["{{ $now := Now }}", "conditions:"]
    for kind in POD_CONDITIONS:
        lines += [f"- type: {kind}", '  status: "True"', "  lastTransitionTime: {{ $now | Quote }}"]
    lines += [
        "containerStatuses:",
        "{{ range .spec.containers }}",
        "- name: {{ .name | Quote }}",
        "  image: {{ .image | Quote }}",
        "  ready: true",
        "  started: true",
        "  restartCount: 0",
        "  state:",
        "    running:",
        "      startedAt: {{ $now | Quote }}",
        "{{ end }}",
        "{{ with .spec.initContainers }}",
        "initContainerStatuses:",
        "{{ range . }}",
        "- name: {{ .name | Quote }}",
        "  image: {{ .image | Quote }}",
        "  ready: true",
        "  restartCount: 0",
        "  state:",
        "    terminated:",
        "      exitCode: 0",
        "      reason: Completed",
        "      startedAt: {{ $now | Quote }}",
        "      finishedAt: {{ $now | Quote }}",
        "{{ end }}",
        "{{ end }}",
        "{{ with NodeIPsWith .spec.nodeName }}",
        "hostIP: {{ index . 0 | Quote }}",
        "hostIPs:",
        "{{ range . }}",
        "- ip: {{ . | Quote }}",
        "{{ end }}",
        "{{ end }}",
        "{{ with PodIPsWith .spec.nodeName (or .spec.hostNetwork false) (or .metadata.uid \"\")"
        " (or .metadata.name \"\") (or .metadata.namespace \"\") }}",
        "podIP: {{ index . 0 | Quote }}",
        "podIPs:",
        "{{ range . }}",
        "- ip: {{ . | Quote }}",
        "{{ end }}",
        "{{ end }}",
        "phase: Running",
        "startTime: {{ $now | Quote }}",
    ]
    return "\n".join(lines) + "\n"


def stages() -> list[dict[str, Any]]:
    """The node and pod stages described in the module docstring."""
    label = f'.metadata.labels["{RUNTIME_LABEL}"]'
    served = f'.metadata.annotations["{SERVED_ANNOTATION}"]'
    pending = [_expr(".metadata.deletionTimestamp", "DoesNotExist"),
               _expr(".status.phase", "In", "Pending")]
    running = {"statusTemplate": pod_running_template()}
    return [
        _stage("sandcheck-node-ready", "Node", [_expr(READY_STATUS, "NotIn", "True")],
               {"statusTemplate": node_ready_template()}),
        _stage("sandcheck-node-heartbeat", "Node", [_expr(READY_STATUS, "In", "True")],
               {"statusTemplate": node_heartbeat_template()},
               delay_seconds=TIMEOUTS.simulated_node_status),
        _stage("sandcheck-pod-running", "Pod", [*pending, _expr(label, "DoesNotExist")],
               running),
        _stage("sandcheck-pod-running-served", "Pod",
               [*pending, _expr(label, "Exists"), _expr(served, "Exists")], running),
        _stage("sandcheck-pod-delete", "Pod", [_expr(".metadata.deletionTimestamp", "Exists")],
               {"delete": True}),
    ]


def config_text(*, server_address: str, cert: Path, key: Path) -> str:
    """The whole ``--config`` file: the controller's options, then the stages."""
    return yaml.safe_dump_all([kwok_configuration(server_address=server_address, cert=cert,
                                                  key=key), *stages()], sort_keys=False)
