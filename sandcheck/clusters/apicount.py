"""Counting the API requests a run makes: the load a fleet run puts on a real API server.

A certify run on 1,000 nodes is bounded by what the API server accepts, so the requests
are counted where they leave the client: every REST call of the backend's ApiClient
(reads, creates, deletes, watch opens) by HTTP method, and every exec (a websocket of an
ApiClient of its own per exec, so it is counted at the backend's exec call).
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any


class RequestCounter:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, kind: str) -> None:
        with self._lock:
            self.counts[kind] += 1

    def total(self) -> int:
        return sum(self.counts.values())

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self.counts.items()))


def count_requests(backend: Any) -> RequestCounter:
    """Wrap ``backend``'s REST client and exec call (instance attributes only: the class
    and other clients are untouched) and return the counter they feed."""
    counter = RequestCounter()
    rest = backend.api_client.rest_client
    request, exec_in_pod = rest.request, backend.exec_in_pod

    def counted_request(method, url, *args, **kwargs):
        counter.add(str(method).upper())
        return request(method, url, *args, **kwargs)

    def counted_exec(*args, **kwargs):
        counter.add("EXEC")
        return exec_in_pod(*args, **kwargs)

    rest.request = counted_request
    backend.exec_in_pod = counted_exec
    return counter
