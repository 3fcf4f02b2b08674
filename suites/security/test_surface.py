"""How much of the host kernel a workload reaches through each runtime: the host syscalls
its executors may make (read from the seccomp filters the kernel holds for them,
evaluated for every syscall number) and the ones they made while the workload ran
(counted by the kernel's raw syscall tracepoint). sandcheck/judges/surface.py says which
processes execute a pod's workload and judges both against the catalog's bound.

Needs the pod's host processes (HOST_PROCESSES: node, local, kind, docker). Where a
backend lacks them (kubeconfig) only what the pod itself sees can be read, which the
isolation suite already checks (its seccomp and syscall-matrix checks).
"""

from __future__ import annotations

import pytest

from sandcheck.clusters.base import Capability
from sandcheck.clusters.fleet import Companion
from sandcheck.errors import ComponentError
from sandcheck.fixtures.nodes import companion_pod
from sandcheck.host import proc as hostproc
from sandcheck.host import syscalltrace
from sandcheck.host.memory import process_name, process_tree
from sandcheck.host.seccomp import surface_of
from sandcheck.judges.surface import (
    GO_AND_WAIT,
    WORKLOAD_SCRIPT,
    Measured,
    executor_roots,
    judge,
)
from sandcheck.reports.results import Metric
from sandcheck.timeouts import TIMEOUTS

INSIDE_ONLY = ("the host syscall surface is read from the pod's host processes, which the "
               "{backend} backend does not reach (it has no HOST_PROCESSES): from inside "
               "the pod only its own seccomp mode and the syscall matrices can be seen, "
               "which the isolation suite checks; run with --backend local, node, kind or "
               "docker for the host side")


def _bound(runtime):
    bound = runtime.isolation.surface
    if bound is None:
        pytest.skip(f"the catalog has no host surface for {runtime.name}: add "
                    f"[runtimes.{runtime.name}.surface] (executors, reachable_max) in a "
                    "catalog file (--catalog) to measure and judge it")
    return bound


def _executors(backend, runtime, pod, marker: str) -> tuple[list[int], dict[int, str]]:
    """The host pids that execute ``pod``'s workload and their descendants (by the
    catalog's ``executors``), and every host process of the pod by name (evidence)."""
    bound = _bound(runtime)
    tree = process_tree(backend.host_pids(pod))
    marked = [pid for pid, _ in hostproc.processes_mentioning(marker)]
    roots = executor_roots([(pid, process_name(pid)) for pid in tree], bound.executors, marked)
    seen = {pid: process_name(pid) for pid in sorted(set(tree) | set(marked))}
    if not roots:
        pytest.fail(f"no host process of this pod executes its workload as the catalog says "
                    f"{runtime.name} does ({', '.join(bound.executors)}): the handler "
                    f"{runtime.handler!r} does not run the runtime the catalog describes. "
                    f"The pod's host processes: {seen}", pytrace=False)
    return process_tree(roots), seen


def _workload(name: str) -> Companion:
    return Companion(name, ("/bin/sh", "-c", WORKLOAD_SCRIPT), Capability.HOST_PROCESSES,
                     applies=lambda runtime: runtime.isolation.surface is not None)


READ, TRACED = _workload("surfr"), _workload("surft")
CELL_COMPANIONS = (READ, TRACED)
"""With ``--nodes`` the fleet starts both workload pods with each node × class cell."""


def _workload_pod(request, backend, runtime, pod_factory, target_node, which: Companion):
    if Capability.HOST_PROCESSES not in backend.capabilities:
        pytest.skip(INSIDE_ONLY.format(backend=backend.name))
    _bound(runtime)
    pod = companion_pod(request, target_node, runtime, which, pod_factory)
    return pod, *_executors(backend, runtime, pod, Companion.marker(pod.spec))


@pytest.fixture(scope="module")
def reachable_surface(request, backend, runtime, pod_factory, target_node):
    """The seccomp surface of a pod of its own: reading a filter stops the process for a
    moment (ptrace), which gVisor's stub processes do not survive unharmed (the next
    program the sandbox runs may crash), so the traced workload runs in another pod."""
    pod, executors, seen = _workload_pod(request, backend, runtime, pod_factory, target_node,
                                         READ)
    try:
        return surface_of(executors, skip_gone=True), executors, seen
    except ComponentError as exc:
        pytest.fail(f"reading the filters of {executors}: {exc}", pytrace=False)


@pytest.fixture(scope="module")
def traced_pod(request, backend, runtime, pod_factory, target_node):
    """The pod whose fixed workload is traced; its processes are never stopped."""
    return _workload_pod(request, backend, runtime, pod_factory, target_node, TRACED)


def test_reachable_host_syscalls_stay_within_the_catalogs_bound(
        runtime, reachable_surface, evidence, record_metric):
    """What the executors' seccomp filters let through, for every syscall number of the
    architecture, against the catalog's bound for this runtime."""
    bound = _bound(runtime)
    surface, executors, seen = reachable_surface
    reachable = frozenset(surface.reachable)
    record_metric(Metric("host_syscalls_reachable_count", runtime.name, "syscalls",
                         [float(len(reachable))]))
    evidence.add("host syscalls reachable: the seccomp filters of the executors",
                 executors={pid: seen.get(pid, process_name(pid)) for pid in executors},
                 pod_host_processes=seen, reachable=sorted(reachable),
                 counts=surface.counts, bound=bound.describe())
    problems = judge(Measured(reachable), bound.reachable_max, bound.never, bound.expected)
    assert not problems, "; ".join(problems) + (f" ({bound.notes})" if bound.notes else "")


def test_exercised_host_syscalls_are_counted_and_allowed(
        runtime, reachable_surface, traced_pod, evidence, record_metric):
    """The distinct host syscalls the executors made while the fixed workload ran (file
    I/O, loopback TCP, process creation, memory mapping): each one must be among the
    reachable ones, or the reader or the tracer is wrong."""
    why = syscalltrace.unavailable()
    if why is not None:
        pytest.skip(f"the exercised surface needs the kernel's tracing: {why}")
    pod, executors, _ = traced_pod
    reachable = frozenset(reachable_surface[0].reachable)
    with syscalltrace.SyscallTrace(executors, f"surface-{runtime.name}") as trace:
        done = pod.exec(GO_AND_WAIT, timeout=TIMEOUTS.traced_workload)
    result = trace.result()
    exercised = frozenset(result.names)
    record_metric(Metric("host_syscalls_exercised_count", runtime.name, "syscalls",
                         [float(len(exercised))]))
    evidence.add("host syscalls exercised: sys_enter of the executors during the workload",
                 exercised=sorted(exercised),
                 by_process={comm: sorted(calls) for comm, calls in result.by_comm.items()},
                 events=result.total_events, lost_events=result.lost_events,
                 workload=done.stdout.strip())
    assert done.exit_code == 0 and done.stdout.strip() == "ok", \
        f"the workload did not finish (exit {done.exit_code}): {done.stdout} {done.stderr}"
    assert result.complete, (f"the trace lost {result.lost_events} events: the count is a "
                             "lower bound")
    assert exercised, "no host syscall traced for the workload's executors"
    problems = judge(Measured(reachable, exercised), None, frozenset(), None)
    assert not problems, "; ".join(problems)
