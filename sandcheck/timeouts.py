"""Every wait sandcheck makes: one table of named timeouts and one poll loop.

A wait ends when its probe returns something other than None, or with a ComponentError
that names what was awaited, how long, and the last state seen (Kubernetes' e2e
WaitForPodCondition works the same way). No caller writes its own deadline loop.

Every wait also asks the watched components (the daemons a run started) whether they
still run: one that exited ends the wait at once with its name, exit status and log, where
the wait would otherwise run out its timeout against a component that cannot answer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from sandcheck.errors import ComponentError

T = TypeVar("T")


@dataclass(frozen=True)
class Timeouts:
    """Seconds. Generous: they bound real work on a busy two-core machine, they are not
    performance targets."""

    pod_start: float = 120.0
    """A pod from create to its container running."""
    exec: float = 60.0
    """One command inside a pod."""
    pod_delete: float = 60.0
    """A pod (and its sandbox) gone."""
    cluster_start: float = 300.0
    """A backend from start() to ready for pods (daemons, API server, node)."""
    node_ready: float = 180.0
    """A Kubernetes node reporting Ready."""
    simulated_node_lease: float = 40.0
    """The lease kwok holds for each simulated node (kwok backend), renewed every quarter
    of it, as kubelet renews its own (kubelet's default, 40 s)."""
    simulated_node_status: float = 300.0
    """Between status heartbeats of a simulated node (kubelet's default report frequency,
    5 min; the lease keeps the node Ready in between)."""
    simulated_watch: float = 300.0
    """How long the API server keeps the kwok backend's watch of the pods it serves logs
    for open before the client reopens it."""
    daemon_start: float = 60.0
    """A private daemon (containerd, dockerd) serving its API."""
    api_call: float = 30.0
    """One request to the Kubernetes API or one CRI call that returns at once."""
    api_retry_budget: float = 60.0
    """The backoff one Kubernetes API call may spend between its retries (429, 5xx) before
    it gives up (sandcheck/clusters/apiflow.py)."""
    command: float = 120.0
    """A short host command (ip, umount, crictl, ctr)."""
    image_import: float = 300.0
    """Importing an image archive into a runtime's store."""
    event: float = 90.0
    """An event the cluster is expected to record (e.g. FailedCreatePodSandBox)."""
    kill_grace: float = 5.0
    """Between SIGTERM and SIGKILL, and again for SIGKILL to take effect."""
    component_stop: float = 10.0
    """A cluster component's grace period at stop."""
    apt: float = 1800.0
    """apt-get update/install."""
    go_module: float = 1800.0
    """go mod download/tidy of a large module graph."""
    go_build: float = 5400.0
    """A cold Go build on two busy cores."""
    cargo_build: float = 3600.0
    """A cold ``cargo install`` of a pinned crate (youki) on two busy cores."""
    runtime_precondition: float = 20.0
    """One host precondition of a runtime tried for real (a gVisor sandbox booted on the
    KVM platform, ``kata-runtime check``)."""
    critest: float = 1800.0
    """One critest run of the whole suite for one handler (runsc's takes minutes)."""
    e2e: float = 3600.0
    """One run of Kubernetes' e2e.test for a focus (node conformance takes minutes)."""
    tool_query: float = 60.0
    """A local tool asked what it is (``containerd --version``, ``config default``, ldd)."""
    cri_probe: float = 10.0
    """One CRI readiness query while containerd restarts (``crictl info``)."""
    crictl_margin: float = 10.0
    """What the crictl process gets beyond its own ``--timeout`` (start-up, output)."""
    http_probe: float = 1.0
    """One readiness request to a registry on this machine."""
    watch_margin: float = 5.0
    """How much longer the API server keeps a watch open than the wait it serves."""
    watch_read_margin: float = 30.0
    """How much longer the client reads a watch than the server keeps it open."""
    ptrace_stop: float = 10.0
    """A tracee's stop before the wait for it blocks (a task in the kernel stops only when
    it leaves it)."""
    traced_workload: float = 120.0
    """The host surface suite's fixed workload, traced."""
    screenshot: float = 120.0
    """Headless Chromium rendering one report page."""
    cell_reports: float = 90.0
    """A fleet cell's collector waiting for the reports of the pod's other containers."""
    cell_log: float = 10.0
    """Asking again for a ready cell pod's log that its log server cannot give yet (400)."""
    bulk_describe: float = 900.0
    """One ``kubectl describe pods`` of every cell pod of a fleet (a request per pod)."""
    fleet_run: float = 3600.0
    """One certification of a simulated fleet, bring-up to bundle (1,000 nodes)."""
    fleet_watch: float = 600.0
    """How long the API server keeps a fleet's watch open before the client reopens it."""

    # Poll intervals and settle windows: not bounds, the pace of a wait.
    ready_poll: float = 0.2
    """Between readiness checks of a daemon, a node or a pod."""
    slow_poll: float = 0.5
    """Between checks that cost a request or a process (node lists, events, a build)."""
    events_every: float = 1.0
    """Between reads of a pod's events while a watch waits for it to start."""
    exec_poll: float = 1.0
    """The longest an exec stream is read before its deadline is checked again."""
    exit_poll: float = 0.1
    """Between checks that processes exited or a cgroup emptied."""
    kill_poll: float = 0.05
    """Between checks that killed or frozen processes are gone."""
    freeze: float = 2.0
    """A cgroup freezer's transition to FROZEN."""
    ptrace_stop_poll: float = 0.005
    """Between checks that a tracee stopped."""
    trace_idle: float = 0.02
    """The trace reader's pause when the ring buffer had nothing to read."""
    memory_read: float = 0.25
    """Between memory readings of a sampling window."""
    memory_settle: float = 2.0
    """After idle pods started, before their memory is read: start-up allocations finish."""
    soak_settle: float = 15.0
    """After a soak's round, for the run's counts to stop moving (a sandbox torn down after
    its removal returned; kubelet's own cleanup of a deleted pod)."""
    kubelet_reaction: float = 2.0
    """A window in which kubelet would react wrongly (a check that nothing happens)."""
    journal_sync: float = 1.0
    """The longest a run's journal of finished checks goes without an fsync while lines
    are added (each line is flushed at once: a killed run loses none; this bounds what a
    power loss can)."""
    api_backoff_base: float = 0.25
    """The first wait before a Kubernetes API call is retried; it doubles per retry (with
    jitter), and a Retry-After the server sends is the least wait."""
    api_backoff_max: float = 8.0
    """The longest backoff between two retries of a Kubernetes API call (a Retry-After
    longer than this is still honoured, within TIMEOUTS.api_retry_budget)."""
    fleet_wake: float = 0.5
    """The longest a thread waiting on the fleet's watch sleeps between looks at its
    deadline (each change wakes it at once)."""


TIMEOUTS = Timeouts()


def wait_until(probe: Callable[[], T | None], timeout: float, what: str, *,
               interval: float = 0.1, state: Callable[[], str] | None = None) -> T:
    """Call ``probe`` every ``interval`` seconds until it returns a value other than None.

    A probe raises to end the wait at once (a failure that waiting cannot fix), and so
    does a watched component that exited. On timeout the error says ``what`` was awaited,
    for how long, and ``state()`` (the last state seen, a log tail) when given.
    """
    deadline = time.monotonic() + timeout
    while True:
        check_watched()
        value = probe()
        if value is not None:
            return value
        if time.monotonic() >= deadline:
            seen = ""
            if state is not None:
                try:
                    seen = "\n" + state()
                except Exception as exc:  # the state is diagnostics: never mask the timeout
                    seen = f"\n(state unavailable: {exc})"
            raise WaitTimeout(f"{what}: not within {timeout:.0f}s{seen}")
        time.sleep(interval)


# -- watched components -------------------------------------------------------------------

_watched: dict[int, Callable[[], ComponentError | None]] = {}
_casualties: list[ComponentError] = []
_paused = 0
_lock = threading.Lock()


def watch(key: object, exited: Callable[[], ComponentError | None]) -> None:
    """Watch a component: ``exited()`` returns the error that says it died, else None."""
    with _lock:
        _watched[id(key)] = exited


def unwatch(key: object) -> None:
    """Stop watching (before a deliberate stop, so a stop is never taken for a death)."""
    with _lock:
        _watched.pop(id(key), None)


def check_watched() -> None:
    """Raise the error of a watched component that exited. Each death is raised once by a
    wait and then kept among the casualties, which later checks are told of."""
    if _paused:
        return
    with _lock:
        dead = [(key, error) for key, exited in _watched.items()
                if (error := exited()) is not None]
        for key, error in dead:
            del _watched[key]
            _casualties.append(error)
    if dead:
        raise dead[0][1]


def casualties() -> list[ComponentError]:
    """Every watched component that died so far, in the order the waits saw them."""
    check_watched()
    with _lock:
        return list(_casualties)


@contextmanager
def watch_paused() -> Iterator[None]:
    """Teardown: components are stopped on purpose and a dead one must not end the waits
    that remove what it left."""
    global _paused
    with _lock:
        _paused += 1
    try:
        yield
    finally:
        with _lock:
            _paused -= 1


class WaitTimeout(ComponentError):
    """A bounded wait ran out."""
