"""One watch for a whole fleet: every cell pod's changes and every event that says a node
lacks a handler, from two streams for the run instead of a list, a watch and event reads
per pod.

A per-pod watch costs two requests before the pod exists and an event read every few
seconds while it starts; for 3,000 cells that is the larger part of a run's API load.
Here one reader per stream keeps the latest state of each pod by name, and the threads
that start cells wait on that state (woken by each change) for their own pod.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from sandcheck.clusters.kubestart import HANDLER_MISSING
from sandcheck.clusters.podwatch import END, PodWatch
from sandcheck.errors import ComponentError
from sandcheck.timeouts import TIMEOUTS, WaitTimeout, wait_until

T = TypeVar("T")


class FleetWatch:
    """``with FleetWatch(core, namespace, labels) as w: create...; w.wait(name, decide)``."""

    def __init__(self, core, namespace: str, labels: str):
        self.pods = PodWatch(core, namespace, None, TIMEOUTS.fleet_watch, labels=labels)
        self.events = PodWatch(core, namespace, None, TIMEOUTS.fleet_watch,
                               fields="reason=FailedCreatePodSandBox",
                               lister=core.list_namespaced_event)
        self.state: dict[str, tuple[str, dict[str, Any]]] = {}
        """Pod name -> (last event type, pod object)."""
        self.handler_problems: dict[str, str] = {}
        """Pod name -> the event message that says its node lacks the handler."""
        self._changed = threading.Condition()
        self._closed = threading.Event()

    def __enter__(self) -> FleetWatch:
        self.pods.__enter__()
        try:
            self.events.__enter__()
        except BaseException:
            self.pods.close()
            raise
        for stream, take in ((self.pods, self._pod), (self.events, self._event)):
            threading.Thread(target=self._pump, args=(stream, take), daemon=True,
                             name="fleet-watch").start()
        return self

    def _pump(self, stream: PodWatch, take: Callable[[str, dict[str, Any]], None]) -> None:
        while not self._closed.is_set():
            try:
                item = stream.next(TIMEOUTS.fleet_wake)
            except ComponentError:  # reopening failed (the API is busy): try again
                self._closed.wait(TIMEOUTS.fleet_wake)
                stream.items.put((0.0, END, {}))
                continue
            if item is None:
                continue
            with self._changed:
                take(item[1], item[2])
                self._changed.notify_all()

    def _pod(self, kind: str, obj: dict[str, Any]) -> None:
        name = (obj.get("metadata") or {}).get("name")
        if name:
            self.state[name] = (kind, obj)

    def _event(self, kind: str, obj: dict[str, Any]) -> None:
        name = (obj.get("involvedObject") or {}).get("name")
        message = obj.get("message") or ""
        if name and kind != "DELETED" and any(s in message for s in HANDLER_MISSING):
            self.handler_problems.setdefault(name, message)

    def wait(self, name: str, decide: Callable[[str | None, dict[str, Any] | None,
                                                str | None], T | None],
             timeout: float, what: str) -> T:
        """``decide(event type, pod, handler problem)`` on each change of pod ``name``
        until it returns a value; ComponentError naming ``what`` when ``timeout`` runs out."""
        def decided() -> T | None:
            with self._changed:
                kind, obj = self.state.get(name, (None, None))
                value = decide(kind, obj, self.handler_problems.get(name))
                if value is None:
                    self._changed.wait(TIMEOUTS.fleet_wake)
                return value

        try:
            return wait_until(decided, timeout, what, interval=0)
        except WaitTimeout as exc:
            raise ComponentError(str(exc)) from None

    def forget(self, name: str) -> None:
        with self._changed:
            self.state.pop(name, None)
            self.handler_problems.pop(name, None)

    def close(self) -> None:
        self._closed.set()
        self.pods.close()
        self.events.close()

    def __exit__(self, *exc) -> None:
        self.close()
