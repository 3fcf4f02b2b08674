"""A runtime's host syscall surface: which host processes execute a pod's workload, and
whether what they may reach (their seccomp filters) and what they did reach (traced) stay
within the catalog's bound.

The executors differ by runtime, and the catalog names them (``HostSurface.executors``):
``workload`` is the workload's own processes (runc, crun: the container's processes are
host processes, found by a marker in their command line), any other entry is the argv0 of
a process in the pod's host process tree (gVisor: ``runsc-sandbox``, the Sentry, and
``runsc-gofer``; a VM runtime: its hypervisor). Their descendants count too (gVisor's
systrap stubs). Shims and the runtime's command line tool are the management plane: they
run no workload and have no filter, so they are left out.

Judging is pure: sets of syscall names in, problems out, each naming the difference.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

WORKLOAD = "workload"
"""``executors`` entry: the workload's own processes on the host."""

WORKLOAD_SCRIPT = (
    "/bin/busybox mkfifo /tmp/go && read go < /tmp/go; "
    "cd /tmp && "
    "/bin/busybox dd if=/dev/zero of=/tmp/w bs=1048576 count=4 2>/dev/null && "
    "/bin/busybox sha256sum /tmp/w >/dev/null && "
    "/bin/busybox mkdir -p /tmp/d && /bin/busybox mv /tmp/w /tmp/d/w && "
    "/bin/busybox ls -l /tmp/d >/dev/null && /bin/busybox rm -r /tmp/d && "
    "(/bin/busybox nc -l -p 7777 >/tmp/recv &) && /bin/busybox sleep 0.3 && "
    "echo hello | /bin/busybox nc -w 1 127.0.0.1 7777; "
    "/bin/busybox sleep 0.3; /bin/busybox grep -q hello /tmp/recv && "
    "/bin/busybox touch /tmp/done-ok; /bin/busybox touch /tmp/done; "
    "exec /bin/busybox sleep 2147483647"
)
"""The fixed workload, as the pod's main process: it blocks reading the FIFO /tmp/go
(nothing runs, nothing forks: under gVisor a fork makes a stub process the Sentry sets up
with ptrace, which must not meet another tracer's stop while the filters are read), then writes,
reads and hashes 4 MiB (1 MiB buffers: memory mapping), makes, moves, lists and removes a
directory, sends a line over loopback TCP (nc), creating a process per step; /tmp/done-ok
says the network step worked. Tracing starts before /tmp/go is made."""
GO_AND_WAIT = ["/bin/sh", "-c", "echo go > /tmp/go; while [ ! -e /tmp/done ]; do "
               "/bin/busybox sleep 0.05; done; [ -e /tmp/done-ok ] && echo ok"]


@dataclass(frozen=True)
class Measured:
    """One runtime's surface, as names."""

    reachable: frozenset[str]
    exercised: frozenset[str] | None = None
    """None when the surface was not traced."""


def executor_roots(tree: Iterable[tuple[int, str]], executors: Iterable[str],
                   marked: Iterable[int]) -> list[int]:
    """The pids that execute the workload (before descendants are added): the marked
    processes for ``workload``, else the processes of the pod's tree (pid, argv0 name)
    whose name is an executor."""
    wanted = set(executors)
    roots = set(marked) if WORKLOAD in wanted else set()
    roots |= {pid for pid, name in tree if name in wanted}
    return sorted(roots)


def judge(measured: Measured, reachable_max: int | None, never: frozenset[str],
          expected: frozenset[str] | None) -> list[str]:
    """Problems with a measured surface against its catalog bound, each naming the
    syscalls that make it."""
    problems = []
    if reachable_max is not None and len(measured.reachable) > reachable_max:
        beyond = sorted(measured.reachable - expected) if expected else []
        problems.append(f"{len(measured.reachable)} host syscalls reachable, more than the "
                        f"catalog's bound of {reachable_max}"
                        + (f"; beyond the expected set: {', '.join(beyond)}" if beyond else ""))
    elif expected is not None and measured.reachable - expected:
        problems.append("reachable beyond the catalog's expected set: "
                        + ", ".join(sorted(measured.reachable - expected)))
    if forbidden := measured.reachable & never:
        problems.append("reachable although the catalog says never: "
                        + ", ".join(sorted(forbidden)))
    if measured.exercised is not None and (ghost := measured.exercised - measured.reachable):
        problems.append("traced calls the filters do not allow (the reader or the tracer "
                        "is wrong): " + ", ".join(sorted(ghost)))
    return problems


def differences(mine: frozenset[str], reference: frozenset[str]) -> dict[str, list[str]]:
    """What one runtime reaches that the reference (runc) does not, and the reverse."""
    return {"only_here": sorted(mine - reference), "only_in_reference": sorted(reference - mine)}
