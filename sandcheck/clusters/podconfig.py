"""A PodSpec as CRI sees it: the PodSandboxConfig and ContainerConfig documents that
``crictl runp``/``create`` take, written the way kubelet fills them (pod pid namespace,
seccomp as a profile type, capabilities added and dropped by name, the masked and read-only
/proc paths, no_new_privs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sandcheck.clusters.base import RUN_LABEL, RUNTIME_LABEL, PodSpec

POD_NAMESPACE = "sandcheck"
# CRI's NamespaceMode: POD = 0, CONTAINER = 1, NODE = 2.
_NAMESPACES = {"network": 0, "pid": 1, "ipc": 0}
# CRI's SecurityProfile.ProfileType: RuntimeDefault = 0, Unconfined = 1.
_SECCOMP = {"RuntimeDefault": (0, "runtime/default"), "Unconfined": (1, "unconfined")}
# What kubelet sends for the Default procMount (k8s.io/kubernetes pkg/securitycontext,
# v1.34): containerd's CRI starts from empty lists and applies only these, so a pod made
# without them has a writable /proc/sys (the node's core_pattern) and an unmasked /proc.
# containerd clears both for a privileged container.
MASKED_PATHS = (
    "/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys",
    "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
    "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")


def sandbox_config(spec: PodSpec, name: str, run_id: str, log_directory: Path,
                   cgroup_parent: str | None = None) -> dict[str, Any]:
    """``cgroup_parent``: the pod's cgroup (kubelet gives its pod cgroup here); containerd
    puts the sandbox and every container below it, instead of its shared ``/k8s.io``."""
    security: dict[str, Any] = {"namespace_options": dict(_NAMESPACES)}
    if spec.privileged:
        # kubelet marks the sandbox privileged when a container is; containerd refuses a
        # privileged container in a sandbox that is not ("no privileged container allowed").
        security["privileged"] = True
    linux: dict[str, Any] = {"security_context": security}
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
                          "seccomp_profile_path": profile_path,
                          "masked_paths": masked_paths(),
                          "readonly_paths": list(READONLY_PATHS)}
    if spec.add_capabilities or spec.drop_capabilities:
        sc["capabilities"] = {"add_capabilities": list(spec.add_capabilities),
                              "drop_capabilities": list(spec.drop_capabilities)}
    if spec.run_as_user is not None:
        sc["run_as_user"] = {"value": spec.run_as_user}
    if spec.allow_privilege_escalation is False:
        sc["no_new_privs"] = True  # kubelet's translation of allowPrivilegeEscalation
    return {
        "metadata": {"name": "probe"},
        "image": {"image": image},
        "command": list(spec.command),
        "log_path": "probe.log",
        "labels": {RUN_LABEL: run_id},
        "linux": {"security_context": sc},
    }


def masked_paths() -> list[str]:
    """kubelet's masked paths: the fixed list plus each CPU's thermal_throttle directory
    that exists on this node."""
    throttle = sorted(str(p) for p in Path("/sys/devices/system/cpu").glob(
        "cpu[0-9]*/thermal_throttle"))
    return [*MASKED_PATHS, *throttle]
