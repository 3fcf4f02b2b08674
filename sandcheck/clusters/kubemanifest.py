"""A PodSpec as a Kubernetes Pod object: one probe container with the probe image, the
spec's security context, labels of the run and the runtime, and nothing the probe does
not use (no service account token, no service links, no cluster DNS).

Pure: the backends send what this returns.
"""

from __future__ import annotations

from typing import Any

from sandcheck.clusters.base import RUN_LABEL, RUNTIME_LABEL, PodSpec
from sandcheck.containerd.images import PROBE_IMAGE


def pod_manifest(spec: PodSpec, name: str, namespace: str, run_id: str,
                 image: str = PROBE_IMAGE, pull_policy: str = "Never") -> dict[str, Any]:
    """The Pod object for ``spec`` (pure: no API calls)."""
    sc: dict[str, Any] = {
        "seccompProfile": {"type": "Unconfined" if spec.seccomp == "Unconfined"
                           else "RuntimeDefault"},
    }
    if spec.privileged:
        sc["privileged"] = True
    if spec.add_capabilities or spec.drop_capabilities:
        sc["capabilities"] = {}
        if spec.add_capabilities:
            sc["capabilities"]["add"] = list(spec.add_capabilities)
        if spec.drop_capabilities:
            sc["capabilities"]["drop"] = list(spec.drop_capabilities)
    if spec.run_as_user is not None:
        sc["runAsUser"] = spec.run_as_user
    if spec.allow_privilege_escalation is not None:
        sc["allowPrivilegeEscalation"] = spec.allow_privilege_escalation
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {RUN_LABEL: run_id, RUNTIME_LABEL: spec.runtime.name, **spec.labels},
        },
        "spec": {
            "runtimeClassName": spec.runtime_class_name or spec.runtime.runtime_class,
            "restartPolicy": "Never",
            # Nothing in the pod talks to the API or to cluster DNS: no token volume
            # (a tmpfs mount per pod), no service environment, the node's resolv.conf.
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "dnsPolicy": "Default",
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "probe",
                "image": image,
                "imagePullPolicy": pull_policy,
                "command": list(spec.command),
                "securityContext": sc,
                **({"resources": spec.resources} if spec.resources else {}),
            }],
            **({"nodeName": spec.node_name} if spec.node_name else {}),
            **({"nodeSelector": dict(spec.node_selector)} if spec.node_selector else {}),
        },
    }
