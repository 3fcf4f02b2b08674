"""A synthetic certification of a fleet: results shaped as a ``sandcheck certify --nodes
all`` run on a kubeconfig cluster writes them (imported as ``fleetgen``: pytest puts tests/
on the path). Pure data, deterministic, no cluster.

What real results hold and this copies: check ids ``<suite>.<test name without test_>``,
pytest node ids with the node *slot* in the parameter id (``[runsc-node12]``, the slot
index, fixed before the cluster was up) and the node's resolved name in ``node``; the
runtime's catalog name in ``runtime``; skips worded as pytest words them (``Skipped: ``),
a class the node lacks skipped on every check as ``missing on node N: ...``; evidence
items as the ``evidence`` fixture and an exec's ``evidence()`` make them; the fleet's
environment (fingerprints per node, every cell's start outcome, the API request count).

``python3 tests/fleetgen.py OUT.json [NODES]`` writes one.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from sandcheck.clusters.fleet import MISSING_PREFIX
from sandcheck.reports.results import Check, Results

CLASSES = {"runc": ("runc", "runc"), "crun": ("crun", "crun"), "runsc": ("gvisor", "runsc")}
"""Catalog name -> (RuntimeClass, handler)."""
ISOLATION = ("kernel_identity", "kernel_log_identity", "syscall_matrix_runtime_default",
             "syscall_matrix_unfiltered", "host_processes_invisible",
             "kernel_symbols_and_log_device_unreadable", "devices_minimal",
             "default_capabilities", "seccomp_runtime_default", "security_context_is_applied",
             "capabilities_dropped_refuse_privileged_calls")
RUNTIMECLASS = ("pod_runs_on_its_handler", "describe_shows_runtime_class",
                "class_runs_only_where_its_handler_is")
ESCAPE = ("default_pod_shows_no_escape_precondition",
          "restricted_pod_got_its_security_context",
          "restricted_pod_shows_no_escape_precondition", "privileged_control_is_seen",
          "privileged_pod_stays_within_its_sandbox")
SURFACE = ("reachable_host_syscalls_stay_within_the_catalogs_bound",
           "exercised_host_syscalls_are_counted_and_allowed")
NOT_PER_NODE = ("missing_runtime_class_is_rejected_at_admission",
                "unknown_handler_leaves_pod_pending",
                "scheduling_is_merged_and_conflicts_rejected",
                "overhead_lands_in_spec_and_cgroup",
                "deleting_runtime_class_keeps_running_pods", "seed_walkthrough_gvisor")
FILES = {"isolation": "suites/isolation/test_isolation.py",
         "runtimeclass": "suites/runtimeclass/test_runtimeclass.py",
         "security": "suites/security/test_escape.py"}
SURFACE_FILE = "suites/security/test_surface.py"
NO_HOST_PROCESSES = (
    "the host syscall surface is read from the pod's host processes, which the kubeconfig "
    "backend does not reach (it has no HOST_PROCESSES): from inside the pod only its own "
    "seccomp mode and the syscall matrices can be seen, which the isolation suite checks; "
    "run with --backend local, node, kind or docker for the host side")
SHARED_KERNEL = ("the catalog lets a privileged {rt} pod show any precondition (it shares "
                 "the node's kernel); see the control check")


@dataclass
class Fleet:
    """What the synthetic fleet is made of; failures and gaps are given per node index.
    ``Fleet.of(n)`` scales the default one (1,000 nodes) to n nodes."""

    nodes: int = 1000
    classes: tuple[str, ...] = ("runc", "crun", "runsc")
    devices_failing: frozenset[int] = frozenset(range(0, 900, 3))
    """runsc shows /dev/kmsg on these nodes (300 of 1,000: one check fails)."""
    kernel_failing: frozenset[int] = frozenset({3})
    """runsc reports the node's kernel there too (a cell failing two checks)."""
    escape_failing: frozenset[int] = frozenset({41, 512, 913})
    """runc's default pod sees a writable core_pattern there (a long message)."""
    broken: dict[int, str] = field(default_factory=lambda: {250: "crun", 251: "crun"})
    """The class's probe pod never started: every check of the cell fails with why."""
    missing: dict[int, str] = field(default_factory=lambda: {
        i: "runsc" for i in range(960, 1000)})
    """The node lacks the class's handler: every check of the cell skips as missing."""
    evidence_bytes: int = 600
    """About how much probe output each exec evidence carries."""

    @classmethod
    def of(cls, nodes: int, **overrides) -> Fleet:
        """The default fleet's proportions at ``nodes`` nodes."""
        spec = {"nodes": nodes, "devices_failing": frozenset(range(0, nodes * 9 // 10, 3)),
                "kernel_failing": frozenset({3} if nodes > 3 else ()),
                "escape_failing": frozenset(i * nodes // 1000 for i in (41, 512, 913)),
                "broken": {nodes // 4: "crun", nodes // 4 + 1: "crun"} if nodes >= 8 else {},
                "missing": {i: "runsc" for i in range(nodes - nodes // 25, nodes)}}
        return cls(**{**spec, **overrides})

    def name(self, index: int) -> str:
        return f"pool-a-node-{index:04d}"


def _exec_evidence(what: str, output: object, seconds: float) -> dict:
    return {"what": f"exec /probe {what}", "exit_code": 0, "output": output, "stderr": "",
            "seconds": seconds}


def _evidence(suite: str, test: str, rt: str, node: str, i: int, size: int) -> list[dict]:
    kernel = "4.4.0" if rt == "runsc" else "6.1.0-28-amd64"
    filler = ("0123456789abcdef" * (size // 16 + 1))[:size]
    probe = {"uname": {"sysname": "Linux", "release": kernel, "nodename": f"probe-{rt}-{i}",
                       "machine": "x86_64"},
             "proc_version": f"Linux version {kernel} (gcc 12.2.0) #1 SMP", "raw": filler}
    seconds = round(0.01 + (i % 17) / 1000, 4)
    if suite == "isolation" and test.startswith("kernel"):
        return [{"what": "node kernel", "output": "6.1.0-28-amd64"},
                _exec_evidence("json", probe, seconds)]
    if suite == "runtimeclass":
        return [{"what": "pod.spec.runtimeClassName", "output": CLASSES[rt][0]},
                {"what": "node of the pod", "output": node}]
    if suite == "security":
        return [_exec_evidence("escape", {**probe, "held": {}}, seconds),
                {"what": "escape preconditions held (default pod)", "output": {},
                 "allowed": [], "required": [], "unmeasured": [], "catalog_notes": ""}]
    return [_exec_evidence("json", probe, seconds)]


def _cell(fleet: Fleet, i: int, rt: str) -> list[Check]:
    node = fleet.name(i)
    runtime_class, handler = CLASSES[rt]
    missing = fleet.missing.get(i) == rt
    broken = fleet.broken.get(i) == rt
    out = []
    tests = ([("isolation", t, FILES["isolation"]) for t in ISOLATION]
             + [("runtimeclass", t, FILES["runtimeclass"]) for t in RUNTIMECLASS]
             + [("security", t, FILES["security"]) for t in ESCAPE]
             + [("security", t, SURFACE_FILE) for t in SURFACE])
    for suite, test, path in tests:
        nodeid = f"{path}::test_{test}[{rt}-node{i}]"
        check = Check(id=f"{suite}.{test}", runtime=rt, status="passed", nodeid=nodeid,
                      node=node, duration_seconds=round(0.05 + (i * 7 + len(test)) % 40 / 100,
                                                        3))
        if missing:
            check.status = "skipped"
            check.message = (f"Skipped: {MISSING_PREFIX}{node}: RuntimeClass {runtime_class} "
                             f"(handler {handler}): the handler is not installed there "
                             f"(no runtime for \"{handler}\" is configured)")
            check.duration_seconds = 0.0
        elif broken:
            check.status = "error" if suite == "isolation" else "failed"
            check.message = (f"Failed: probe pod sandcheck-{rt}-{i:x} on {node} did not start "
                             f"within 120s: ContainerCreating (FailedCreatePodSandBox: "
                             f"failed to create shim task: OCI runtime create failed: "
                             f"{handler}: exit status 1)")
        elif path == SURFACE_FILE:
            check.status, check.message = "skipped", f"Skipped: {NO_HOST_PROCESSES}"
        elif test == "privileged_pod_stays_within_its_sandbox" and rt != "runsc":
            check.status = "skipped"
            check.message = "Skipped: " + SHARED_KERNEL.format(rt=rt)
        else:
            check.evidence = _evidence(suite, test, rt, node, i, fleet.evidence_bytes)
            if test == "devices_minimal" and rt == "runsc" and i in fleet.devices_failing:
                check.status = "failed"
                check.message = (f"AssertionError: runsc on {node}: devices beyond the "
                                 f"catalog's set: ['/dev/kmsg']\nassert ['/dev/kmsg'] == []")
            elif test == "kernel_identity" and rt == "runsc" and i in fleet.kernel_failing:
                check.status = "failed"
                check.message = (f"AssertionError: runsc on {node}: the pod sees the node's "
                                 "kernel 6.1.0-28-amd64, not gVisor's\nassert False")
            elif (test == "default_pod_shows_no_escape_precondition" and rt == "runc"
                  and i in fleet.escape_failing):
                check.status = "failed"
                check.message = (
                    "AssertionError: runc default pod: escape preconditions hold that the "
                    "catalog does not allow: core_pattern_writable (a writable "
                    "/proc/sys/kernel/core_pattern runs a program of the pod's choosing as "
                    "root on the node): " + '[{"path": "/proc/sys/kernel/core_pattern", '
                    '"mode": "rw", "mount": "proc rw,nosuid,nodev,noexec"}] ' * 6)
        out.append(check)
    return out


def fleet_results(fleet: Fleet | None = None) -> Results:
    """The results of certifying ``fleet`` (default: 1,000 nodes × runc, crun, runsc)."""
    fleet = fleet or Fleet()
    checks = []
    for i in range(fleet.nodes):
        for rt in fleet.classes:
            checks += _cell(fleet, i, rt)
    checks += [Check(id=f"runtimeclass.{t}", runtime=None, status="passed",
                     nodeid=f"{FILES['runtimeclass']}::test_{t}", duration_seconds=1.2,
                     evidence=[{"what": "API answer", "output": {"status": 403}}])
               for t in NOT_PER_NODE]
    names = [fleet.name(i) for i in range(fleet.nodes)]
    fingerprints = {n: {"kernel": "6.8.0-1021-aws" if i % 250 == 0 else "6.1.0-28-amd64",
                        "kubelet": "v1.34.12", "container_runtime": "containerd://1.7.35",
                        "os_image": "Debian GNU/Linux 12 (bookworm)", "architecture": "amd64"}
                    for i, n in enumerate(names)}
    cells = {f"{fleet.name(i)}/{rt}": ("missing" if fleet.missing.get(i) == rt else
                                       "broken" if fleet.broken.get(i) == rt else "running")
             for i in range(fleet.nodes) for rt in fleet.classes}
    env = {"backend": "kubeconfig", "backend_level": "Kubernetes", "kubernetes": "v1.34.12",
           "server": "https://10.0.0.1:6443", "probe_image": "registry.example.com/probe@sha256:"
           + "ab" * 32, "image_pull_policy": "IfNotPresent",
           "runtime_classes": {rt: f"created {CLASSES[rt][0]}" for rt in fleet.classes},
           "handlers_verified": {CLASSES[rt][1]: "a pod ran" for rt in fleet.classes},
           "handlers_missing": {},
           "nodes": [{"name": n, **fingerprints[n]} for n in names],
           "node_selection": "all", "node_parallelism": 8, "node_fingerprints": fingerprints,
           "fleet_start_seconds": round(fleet.nodes * len(fleet.classes) * 0.41, 2),
           "fleet_cells": cells,
           "api_requests": {"fleet_start": fleet.nodes * 9, "session": {"GET": fleet.nodes * 40},
                            "per_node": 52.3},
           "pid": 4242}
    return Results(environment=env, checks=checks)


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python3 tests/fleetgen.py OUT.json [NODES]")
    fleet_results(Fleet.of(int(sys.argv[2]) if len(sys.argv) == 3 else 1000)).write(
        Path(sys.argv[1]))
