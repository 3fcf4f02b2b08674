"""Isolation: what a workload inside a pod of each runtime can see of, and do to, the node.

Each check compares the probe's report from inside the pod with the node's own view
and with the runtime's expected profile in the catalog; every check keeps its evidence.
"""

from __future__ import annotations

import os
import re

import pytest

from sandcheck.catalog import classify
from sandcheck.clusters.base import PodSpec
from sandcheck.errors import ComponentError
from sandcheck.fixtures.pods import node_kernel, run_probe

CAP_SYS_ADMIN = 21
DEVICES_ALLOWED = {
    "null", "zero", "full", "random", "urandom", "tty", "console", "pts", "ptmx", "shm",
    "mqueue", "fd", "stdin", "stdout", "stderr", "core", "termination-log",
}


@pytest.fixture(scope="module")
def unfiltered(runtime, pod_factory):
    """A pod with the default capabilities and no seccomp filter: the kernel answers."""
    pod = pod_factory(PodSpec(runtime=runtime, name_prefix=f"unf-{runtime.name}",
                              seccomp="Unconfined"))
    return run_probe(pod)


@pytest.fixture(scope="module")
def no_capabilities(runtime, pod_factory):
    """A pod that drops every capability and asks for no seccomp filter."""
    pod = pod_factory(PodSpec(runtime=runtime, name_prefix=f"nocap-{runtime.name}",
                              drop_capabilities=["ALL"], seccomp="Unconfined"))
    return run_probe(pod)


def _expect(runtime, attr: str):
    value = vars(runtime.isolation)[attr]
    if value is None or value == {}:
        pytest.skip(f"the catalog has no {attr} expectation for {runtime.name}: add one in a "
                    "catalog file (--catalog) to check it; the facts are in results.json")
    return value


def test_kernel_identity(runtime, probe, probe_pod, backend, evidence):
    node = node_kernel(backend, probe_pod)
    pod_release = probe.data["uname"]["release"]
    evidence.add("node kernel", node)
    evidence.add(**probe.evidence("uname", "proc_version"))
    own_kernel = _expect(runtime, "own_kernel")
    if own_kernel:
        assert pod_release != node["release"], (
            f"{runtime.name} is expected to run its own kernel but the pod reports the node's "
            f"({pod_release})")
        if node["proc_version"] is not None:
            assert probe.data["proc_version"] != node["proc_version"]
    else:
        assert pod_release == node["release"], (
            f"{runtime.name} should share the node's kernel {node['release']}, pod shows "
            f"{pod_release}")


def test_kernel_log_identity(runtime, unfiltered, probe_pod, backend, evidence):
    """A sandbox's kernel log is its own (gVisor's boot lines), never the node's.

    Read with no seccomp filter, so the answer is the kernel's, not the filter's."""
    probe = unfiltered
    lines = probe.data.get("dmesg") or []
    evidence.add(**probe.evidence("dmesg", "dmesg_errno"))
    node_release = node_kernel(backend, probe_pod)["release"]
    assert not any(node_release in line for line in lines), (
        f"the pod read the node's kernel log (a line names {node_release})")
    marker = runtime.isolation.dmesg_marker
    if marker is None:
        if runtime.isolation.own_kernel is False:
            assert probe.data.get("dmesg_errno") in ("EPERM", "EACCES"), (
                "a container on the node's kernel must not read the kernel log")
            return
        _expect(runtime, "dmesg_marker")
    assert any(re.search(marker, line) for line in lines), (
        f"no kernel log line matches {marker!r}: {lines[:5]}")


def _check_syscalls(runtime, probe, expected, evidence, context: str) -> None:
    observed = {name: classify(r) for name, r in probe.data["syscalls"].items()}
    evidence.add(f"syscall outcomes ({context})", observed, raw=probe.data["syscalls"])
    missing = sorted(set(expected) - set(observed))
    assert not missing, f"the probe did not report {missing}"
    wrong = {name: f"{observed[name]} (expected {'/'.join(sorted(allowed))})"
             for name, allowed in expected.items() if observed[name] not in allowed}
    assert not wrong, f"{runtime.name} ({context}) differs from its profile: {wrong}"


def test_syscall_matrix_runtime_default(runtime, probe, evidence):
    _check_syscalls(runtime, probe, _expect(runtime, "syscalls"), evidence,
                    "RuntimeDefault seccomp")


def test_syscall_matrix_unfiltered(runtime, unfiltered, evidence):
    _check_syscalls(runtime, unfiltered, _expect(runtime, "syscalls_unfiltered"), evidence,
                    "no seccomp filter")


def test_host_processes_invisible(runtime, probe, probe_pod, backend, evidence):
    pids = probe.data["pids"]
    host_ns = os.readlink("/proc/self/ns/pid")
    pod_ns = probe.data["namespaces"].get("pid")
    host_pids = backend.host_pids(probe_pod)
    evidence.add("pids visible in the pod", pids, pid_namespace=pod_ns)
    evidence.add("node", {"pid_namespace": host_ns, "pod_host_processes": host_pids,
                          "node_process_count": sum(p.isdigit() for p in os.listdir("/proc"))})
    assert pod_ns != host_ns, "the pod shares the node's pid namespace"
    assert len(pids) <= 10, f"the pod sees {len(pids)} processes: {pids[:20]}"
    assert probe.data["pid"] < 100, "the probe's pid is a node-wide pid"


def test_kernel_symbols_and_log_device_unreadable(runtime, probe, evidence):
    readable = probe.data["readable"]
    evidence.add(**probe.evidence("readable", "kallsyms_nonzero"))
    assert not probe.data.get("kallsyms_nonzero"), "kernel symbol addresses are readable"
    for path in ("/dev/kmsg", "/dev/mem", "/proc/kcore"):
        assert not readable.get(path), f"{path} is readable inside the pod"


def test_devices_minimal(runtime, probe, evidence):
    devices = set(probe.data["devices"])
    evidence.add(**probe.evidence("devices"))
    extra = sorted(devices - DEVICES_ALLOWED - runtime.isolation.extra_devices)
    assert not extra, f"unexpected device nodes in /dev: {extra}"


def test_default_capabilities(runtime, probe, evidence):
    caps = {k: int(v, 16) for k, v in probe.data["caps"].items() if v is not None}
    evidence.add(**probe.evidence("caps"))
    want = runtime.isolation.default_capabilities
    assert caps["CapEff"] == want, f"CapEff {caps['CapEff']:#x} is not the expected {want:#x}"
    assert caps["CapBnd"] == want, f"CapBnd {caps['CapBnd']:#x} is not the expected {want:#x}"
    assert not caps["CapEff"] >> CAP_SYS_ADMIN & 1


def test_seccomp_runtime_default(runtime, probe, probe_pod, evidence):
    evidence.add(**probe.evidence("seccomp", "no_new_privs"))
    mode = probe.data["seccomp"]
    why = ""
    if mode != 2:  # the probe is exec'd into the pod: is the container's own process filtered?
        own = _own_process_seccomp(probe_pod)
        evidence.add("the container's own process (PID 1): /proc/1/status", own)
        if own == "2":
            why = (f" in a process exec'd into the pod, while the container's own process "
                   f"(PID 1) has mode 2: {runtime.name} does not give exec'd processes the "
                   "container's filter")
    assert mode == 2, f"the pod asked for RuntimeDefault seccomp; Seccomp mode is {mode}{why}"


def _own_process_seccomp(pod) -> str:
    """The Seccomp field of PID 1's status in the pod, or why it could not be read. Read
    only once the check has already failed, to explain the failure: an error here goes
    into the evidence and the check still fails on its own assertion."""
    try:
        got = pod.exec(["/bin/sh", "-c", "grep '^Seccomp:' /proc/1/status"])
    except ComponentError as exc:
        return f"unreadable: {exc}"[:500]
    words = got.stdout.split()
    return words[-1] if got.exit_code == 0 and words else (
        f"unreadable: exit {got.exit_code} {got.stderr.strip()[:300]}")


def test_security_context_is_applied(runtime, no_capabilities, evidence):
    caps = {k: int(v, 16) for k, v in no_capabilities.data["caps"].items() if v is not None}
    evidence.add(**no_capabilities.evidence("caps", "seccomp"))
    assert caps["CapEff"] == 0, f"drop ALL left CapEff {caps['CapEff']:#x}"
    assert caps["CapBnd"] == 0, f"drop ALL left CapBnd {caps['CapBnd']:#x}"
    assert no_capabilities.data["seccomp"] == 0, "Unconfined was asked, a seccomp filter is on"


def test_capabilities_dropped_refuse_privileged_calls(runtime, no_capabilities, evidence):
    """With no capabilities and no filter, the kernel alone must refuse these."""
    probe = no_capabilities
    observed = {name: classify(r) for name, r in probe.data["syscalls"].items()}
    evidence.add("syscall outcomes (no capabilities, no filter)", observed)
    for name in ("mount", "reboot", "unshare_mnt", "chroot", "mknod"):
        assert observed.get(name) in ("denied", "unsupported"), (
            f"{name} is {observed.get(name)} without any capability")
