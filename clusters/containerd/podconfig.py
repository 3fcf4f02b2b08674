"""A PodSpec as CRI sees it: the PodSandboxConfig and ContainerConfig documents that
``crictl runp``/``create`` take, written the way kubelet fills them (pod pid namespace,
seccomp as a profile type, capabilities added and dropped by name)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sandcheck.clusters.backends.base import RUN_LABEL, RUNTIME_LABEL, PodSpec

POD_NAMESPACE = "sandcheck"
# CRI's NamespaceMode: POD = 0, CONTAINER = 1, NODE = 2.
_NAMESPACES = {"network": 0, "pid": 1, "ipc": 0}
# CRI's SecurityProfile.ProfileType: RuntimeDefault = 0, Unconfined = 1.
_SECCOMP = {"RuntimeDefault": (0, "runtime/default"), "Unconfined": (1, "unconfined")}


def sandbox_config(spec: PodSpec, name: str, run_id: str, log_directory: Path,
                   cgroup_parent: str | None = None) -> dict[str, Any]:
    """``cgroup_parent``: the pod's cgroup (kubelet gives its pod cgroup here); containerd
    puts the sandbox and every container below it, instead of its shared ``/k8s.io``."""
    linux: dict[str, Any] = {"security_context": {"namespace_options": dict(_NAMESPACES)}}
    if cgroup_parent is not None:
        linux["cgroup_parent"] = cgroup_parent
    return {
        "metadata": {"name": name, "namespace": POD_NAMESPACE, "uid": name, "attempt": 0},
        "hostname": name,
        "log_directory": str(log_directory),
        "labels": {RUN_LABEL: run_id, RUNTIME_LABEL: spec.runtime.name, **spec.labels},
        "linux": linux,
    }


def container_config(spec: PodSpec, image: str, run_id: str) -> dict[str, Any]:
    profile_type, profile_path = _SECCOMP.get(spec.seccomp, _SECCOMP["Unconfined"])
    sc: dict[str, Any] = {"privileged": spec.privileged,
                          "namespace_options": dict(_NAMESPACES),
                          "seccomp": {"profile_type": profile_type},
                          "seccomp_profile_path": profile_path}
    if spec.add_capabilities or spec.drop_capabilities:
        sc["capabilities"] = {"add_capabilities": list(spec.add_capabilities),
                              "drop_capabilities": list(spec.drop_capabilities)}
    if spec.run_as_user is not None:
        sc["run_as_user"] = {"value": spec.run_as_user}
    return {
        "metadata": {"name": "probe"},
        "image": {"image": image},
        "command": list(spec.command),
        "log_path": "probe.log",
        "labels": {RUN_LABEL: run_id},
        "linux": {"security_context": sc},
    }
