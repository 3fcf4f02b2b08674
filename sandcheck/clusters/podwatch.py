"""A watch on one pod, opened before the pod is created: each status change is stamped
with the monotonic clock on arrival.

Polling the pod every 0.1 s would add up to a poll interval to every start and cost an
API read each time; a watch delivers each change as the API server commits it. The watch
starts from the resourceVersion of a list made just before, so no change between that
list and the connection is lost, and the call that opens it returns once the server has
answered (the watch is in place before the create call). A reader thread puts
(monotonic arrival, event type, pod dict) on a queue; the stream ending early (a dropped
connection, the server's timeout) is reopened from the last resourceVersion seen.
"""

from __future__ import annotations

import json
import queue
import socket
import threading
import time
from typing import Any

from sandcheck.errors import ComponentError
from sandcheck.timeouts import TIMEOUTS

END = "END"
"""Queue item type of a stream that ended (reopen from the last resourceVersion)."""


class PodWatch:
    """``with PodWatch(core, namespace, name, seconds) as w: create...; w.next(timeout)``.

    ``name`` None with ``labels`` watches every pod of those labels (a fleet's cells);
    ``lister`` another namespaced list call (events) and ``fields`` its field selector."""

    def __init__(self, core, namespace: str, name: str | None, seconds: float, *,
                 labels: str | None = None, fields: str | None = None, lister=None):
        self.core = core
        self.namespace = namespace
        self.selector = f"metadata.name={name}" if name else fields
        self.labels = labels
        self.list = lister or core.list_namespaced_pod
        self.seconds = seconds
        self.items: queue.Queue = queue.Queue()
        self.version = ""
        self._response = None
        self._closed = False

    def __enter__(self) -> PodWatch:
        try:
            listed = self.list(self.namespace, field_selector=self.selector,
                               label_selector=self.labels, _request_timeout=TIMEOUTS.api_call)
        except Exception as exc:
            raise ComponentError(f"listing pods in {self.namespace} to watch one: "
                                 f"{exc}") from None
        self.version = listed.metadata.resource_version
        self._open()
        return self

    def _open(self) -> None:
        try:
            response = self.list(
                self.namespace, field_selector=self.selector, label_selector=self.labels,
                watch=True,
                resource_version=self.version,
                timeout_seconds=int(self.seconds + TIMEOUTS.watch_margin),
                _preload_content=False,
                _request_timeout=(TIMEOUTS.api_call, self.seconds + TIMEOUTS.watch_read_margin))
        except Exception as exc:
            raise ComponentError(f"opening a watch on {self.namespace} "
                                 f"({self.selector}): {exc}") from None
        self._response = response
        threading.Thread(target=self._read, args=(response,), daemon=True,
                         name=f"watch-{self.selector}").start()

    def _read(self, response) -> None:
        from kubernetes.watch.watch import iter_resp_lines

        try:
            for line in iter_resp_lines(response):
                arrived = time.monotonic()
                if not line:
                    continue
                event = json.loads(line)
                obj = event.get("object") or {}
                version = (obj.get("metadata") or {}).get("resourceVersion")
                if event.get("type") == "ERROR":
                    # 410 Gone: the version is too old; a fresh list-less watch resumes.
                    self.version = ""
                    break
                if version:
                    self.version = version
                self.items.put((arrived, event.get("type"), obj))
        except Exception:  # the connection closed (by close() or the server): reopen
            pass
        finally:
            _quietly(response.close)
        self.items.put((time.monotonic(), END, {}))

    def next(self, timeout: float) -> tuple[float, str, dict[str, Any]] | None:
        """The next (arrival, type, pod), None when nothing arrives within ``timeout``."""
        try:
            item = self.items.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None
        if item[1] == END:
            if not self._closed:
                self._open()
            return None
        return item

    def close(self) -> None:
        """Shut the socket down under the reader thread, which then closes the response:
        closing it from here would wait for the reader's blocked read, that is for the
        pod's next change (seconds or minutes)."""
        self._closed = True
        response, self._response = self._response, None
        if response is not None:
            _quietly(lambda: _shutdown(response))

    def __exit__(self, *exc) -> None:
        self.close()


def _shutdown(response) -> None:
    """Interrupt a blocking read of ``response`` from another thread."""
    shutdown = getattr(response, "shutdown", None)  # urllib3 >= 2.3
    if shutdown is not None:
        shutdown()
        return
    sock = getattr(getattr(response, "connection", None), "sock", None)
    if sock is not None:
        sock.shutdown(socket.SHUT_RDWR)


def _quietly(action) -> None:
    try:
        action()
    except Exception:  # a socket already closed by the other side
        pass
