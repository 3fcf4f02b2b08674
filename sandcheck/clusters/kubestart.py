"""The wait for a new Kubernetes pod to run, driven by the watch opened before its create
call (``podwatch``).

Each status change is kept with its arrival (seconds after the create call) up to the
first that shows the containers running: those arrivals are the start's timings
(``starttimes``). A state that cannot lead there ends the wait at once instead of at the
deadline: a container state kubelet does not retry, the pod's deletion, or a
FailedCreatePodSandBox event that says the node has no such handler (events are read
every ``TIMEOUTS.events_every``, between reads of the watch).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sandcheck.clusters.podwatch import PodWatch
from sandcheck.clusters.starttimes import is_running
from sandcheck.containerd.images import PROBE_IMAGE
from sandcheck.errors import ComponentError
from sandcheck.timeouts import TIMEOUTS, WaitTimeout, wait_until

# Sandbox failures that retrying cannot fix: the node has no such handler.
HANDLER_MISSING = ("no runtime for", "RuntimeHandler", "runtime handler", "not supported")
# Container states that end a wait at once (the pod never gets to Running by itself).
_FATAL_WAITING = {"ErrImageNeverPull", "InvalidImageName", "CreateContainerConfigError",
                  "CreateContainerError", "RunContainerError", "CrashLoopBackOff",
                  "ImageInspectError"}


def wait_running(watch: PodWatch, start: float, timeout: float, pod: str,
                 events: Callable[[], list], diagnostics: Callable[[], str]
                 ) -> list[tuple[float, dict[str, Any]]]:
    """The watch's arrivals (seconds after ``start``, pod) up to the first that shows
    the containers running; a state that cannot lead there (the node lacks the handler,
    the image is absent) ends the wait at once, as does the deadline, ``timeout`` after
    ``start``. ``pod`` names the pod in errors (``namespace/name (runtime)``),
    ``events()`` lists its events and ``diagnostics()`` is what a failure carries."""
    arrivals: list[tuple[float, dict[str, Any]]] = []
    events_read = start

    def left() -> float:
        return timeout - (time.monotonic() - start)

    def decided() -> list[tuple[float, dict[str, Any]]] | str | None:
        """The arrivals once the pod runs, a problem that stops it, else None; reads the
        watch for up to ``TIMEOUTS.events_every``."""
        nonlocal events_read
        item = watch.next(min(TIMEOUTS.events_every, left()))
        problem = None
        if item is not None and item[1] in ("ADDED", "MODIFIED"):
            arrivals.append((item[0] - start, item[2]))
            if is_running(item[2]):
                return arrivals
            problem = fatal_problem(item[2].get("status") or {})
        elif item is not None and item[1] == "DELETED":
            problem = "the pod was deleted before it ran"
        if problem is None and time.monotonic() - events_read >= TIMEOUTS.events_every:
            events_read = time.monotonic()
            problem = handler_problem(events())
        return problem

    try:
        outcome = wait_until(decided, left(), f"pod {pod} to run", interval=0)
    except WaitTimeout:
        phase = ((arrivals[-1][1] if arrivals else {}).get("status") or {}).get("phase")
        raise ComponentError(f"timed out after {timeout:.0f}s waiting for pod {pod} to run: "
                             f"phase {phase}\n" + diagnostics()) from None
    if isinstance(outcome, str):
        raise ComponentError(f"pod {pod} cannot start: {outcome}\n" + diagnostics())
    return outcome


def handler_problem(events: list) -> str | None:
    """A FailedCreatePodSandBox event that says the node lacks the handler."""
    for ev in events:
        msg = ev.message or ""
        if ev.reason == "FailedCreatePodSandBox" and any(s in msg for s in HANDLER_MISSING):
            return msg
    return None


def fatal_problem(status: dict[str, Any]) -> str | None:
    """What in a pod's status says it will never run by itself (pure)."""
    phase = status.get("phase")
    if phase in ("Failed", "Succeeded"):
        return f"pod phase {phase} ({status.get('reason') or ''} {status.get('message') or ''})"
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        waiting = state.get("waiting") or {}
        if waiting.get("reason") in _FATAL_WAITING:
            hint = ""
            if waiting.get("reason") == "ErrImageNeverPull":
                hint = (f" (the probe image {PROBE_IMAGE} is not on the node: import the "
                        "archive sandcheck/fixtures/image.py builds with "
                        "`ctr -n k8s.io images import`)")
            return f"container {cs.get('name')}: {waiting.get('reason')}: " \
                   f"{waiting.get('message') or ''}{hint}"
        term = state.get("terminated")
        if term:
            return f"container {cs.get('name')} exited {term.get('exitCode')} " \
                   f"({term.get('reason')}): {term.get('message') or ''}"
    return None
