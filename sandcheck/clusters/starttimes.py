"""When a Kubernetes pod's start happened, at millisecond resolution or not at all.

A pod's condition timestamps (creationTimestamp, lastTransitionTime, running.startedAt)
are whole seconds: a phase between two of them is 0 s or 1 s whatever happened, so none
is used here. The start is timed from three sources, each kept at its own resolution:

* the watch: the harness's monotonic clock on the arrival of each status change of the
  pod, through a watch opened before the create call (``watch`` marks);
* containerd's CRI status of the pod's sandbox and container (nanoseconds, its wall
  clock), placed on the same time line through the wall clock read beside the monotonic
  one at the create call: only where the node's clock is this machine's (``cri`` marks).
  The container's start by this clock ends the start figure where it is known;
* events with micro-time (``eventTime``: the scheduler's Scheduled event), by the same
  wall clock anchor (``event`` marks).

Pure functions of pod dicts and numbers: the watch itself is in ``podwatch``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sandcheck.clusters.base import PhaseTimes
from sandcheck.containerd.cri import timestamp_ns

CREATE_TO_SCHEDULED = "create_to_scheduled_seconds"
SCHEDULED_TO_RUNNING = "scheduled_to_running_seconds"
"""The watch phases: consecutive, they add up to the time from the create call to Running
seen on the watch (``total()``)."""
CREATE_TO_SANDBOX = "node_create_to_sandbox_seconds"
CONTAINER_TO_RUNNING = "node_container_started_to_running_seconds"
"""Across the harness's and containerd's clocks (same machine only): the API, scheduler and
kubelet work before the runtime is called, and what passes between the runtime's start of
the container and the API showing the pod Running (kubelet's lifecycle events and status
sync, the watch's delivery)."""


@dataclass
class Mark:
    """One moment of a start, in seconds after the create call."""

    name: str
    seconds: float
    source: str
    """``watch`` (monotonic arrival), ``cri`` (containerd's clock), ``event`` (micro-time)."""

    def row(self) -> dict[str, Any]:
        return {"mark": self.name, "ms": round(self.seconds * 1000, 1), "source": self.source}


@dataclass
class WatchedStart(PhaseTimes):
    """A Kubernetes pod's start as the harness saw it: ``phases`` from watch arrivals.

    ``total()`` is the time from the create call to the container's start by containerd's
    clock once ``against_runtime_clock`` placed it (same machine), else to Running seen
    on the watch. kubelet reports Running only at its next one-second PLEG relist after
    the container started (see backends/local/kubelet.py), the same tick for a fast and a
    slow runtime: the API's Running stays in ``phases`` and ``running_seconds``, beside
    the figure, not in it."""

    anchor_wall_ns: int = 0
    """time.time_ns() read beside the monotonic clock at the create call."""
    running_seconds: float = 0.0
    container_started_seconds: float | None = None
    marks: list[Mark] = field(default_factory=list)

    def total(self) -> float:
        if self.container_started_seconds is not None:
            return self.container_started_seconds
        return self.running_seconds

    def wall_ns(self, seconds: float) -> int:
        return self.anchor_wall_ns + int(seconds * 1e9)

    def at(self, wall_ns: int) -> float:
        """Seconds after the create call of a wall-clock time in ns."""
        return (wall_ns - self.anchor_wall_ns) / 1e9

    def against_runtime_clock(self, inspect: dict[str, Any]) -> dict[str, float]:
        """The phases across the harness's and containerd's clocks (see module doc); adds
        the CRI marks to the time line. {} when the CRI times are missing or the clocks
        disagree (a mark before the create call or after Running: not the same clock)."""
        sandbox = timestamp_ns(((inspect.get("sandbox") or {}).get("status") or {})
                               .get("createdAt"))
        started = timestamp_ns(((inspect.get("container") or {}).get("status") or {})
                               .get("startedAt"))
        if sandbox is None or started is None or not self.anchor_wall_ns:
            return {}
        to_sandbox, to_started = self.at(sandbox), self.at(started)
        if not 0 <= to_sandbox <= to_started <= self.running_seconds:
            return {}
        self.container_started_seconds = to_started
        self.marks += [Mark("cri_sandbox_created", to_sandbox, "cri"),
                       Mark("cri_container_started", to_started, "cri")]
        self.marks.sort(key=lambda m: m.seconds)
        return {CREATE_TO_SANDBOX: to_sandbox,
                CONTAINER_TO_RUNNING: self.running_seconds - to_started}

    def timeline(self) -> list[dict[str, Any]]:
        return [m.row() for m in self.marks]


def is_scheduled(pod: dict[str, Any]) -> bool:
    return bool((pod.get("spec") or {}).get("nodeName"))


def is_running(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    return (status.get("phase") == "Running" and bool(statuses)
            and all((cs.get("state") or {}).get("running") for cs in statuses))


def watched_start(arrivals: list[tuple[float, dict[str, Any]]], anchor_wall_ns: int
                  ) -> WatchedStart:
    """The start from the watch's (seconds after the create call, pod) arrivals, in order
    of arrival; the last one must show the pod Running."""
    start = WatchedStart(anchor_wall_ns=anchor_wall_ns)
    scheduled = next((t for t, pod in arrivals if is_scheduled(pod)), None)
    running = next((t for t, pod in arrivals if is_running(pod)), None)
    if running is None:
        raise ValueError("no arrival shows the pod Running")
    start.running_seconds = running
    if scheduled is None or scheduled > running:
        scheduled = running
    start.phases = {CREATE_TO_SCHEDULED: scheduled, SCHEDULED_TO_RUNNING: running - scheduled}
    start.marks = [Mark("watch_scheduled", scheduled, "watch"),
                   Mark("watch_running", running, "watch")]
    return start


def event_marks(events: list[dict[str, Any]], start: WatchedStart) -> list[Mark]:
    """Marks of the events that carry micro-time (``eventTime``); events with whole-second
    timestamps only are left out."""
    marks = []
    for ev in events:
        when = ev.get("eventTime") or ev.get("event_time")
        if not isinstance(when, str) or "." not in when:
            continue
        ns = timestamp_ns(when)
        if ns is not None:
            marks.append(Mark(f"event_{ev.get('reason') or 'unknown'}", start.at(ns), "event"))
    return marks
