"""Start times on Kubernetes backends: the watch time line, containerd's clock beside it,
no whole-second timestamps, and a watch whose close does not wait for the pod's next
change (pure logic, plus a real HTTP stream on a local socket)."""

from __future__ import annotations

import http.server
import threading
import time

import urllib3

from sandcheck.clusters.podwatch import PodWatch
from sandcheck.clusters.starttimes import (
    CONTAINER_TO_RUNNING,
    CREATE_TO_SANDBOX,
    CREATE_TO_SCHEDULED,
    SCHEDULED_TO_RUNNING,
    event_marks,
    watched_start,
)

ANCHOR = 1_764_000_000 * 10**9  # the wall clock at the create call, ns


def pod(node: str | None = None, running: bool = False) -> dict:
    """A pod dict whose whole-second timestamps say nothing useful (all the same second)."""
    state = {"running": {"startedAt": "2025-11-24T16:00:00Z"}} if running else \
        {"waiting": {"reason": "ContainerCreating"}}
    return {"metadata": {"creationTimestamp": "2025-11-24T16:00:00Z"},
            "spec": {"nodeName": node} if node else {},
            "status": {"phase": "Running" if running else "Pending",
                       "conditions": [{"type": "Ready",
                                       "lastTransitionTime": "2025-11-24T16:00:00Z"}],
                       "containerStatuses": [{"name": "probe", "state": state}]}}


def rfc3339(ns: int) -> str:
    seconds, frac = divmod(ns, 10**9)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{frac:09d}Z"


def test_watch_phases_have_millisecond_resolution_and_add_up():
    start = watched_start([(0.004, pod()), (0.012, pod("n1")), (0.950, pod("n1", True))],
                          ANCHOR)
    assert start.phases == {CREATE_TO_SCHEDULED: 0.012, SCHEDULED_TO_RUNNING: 0.950 - 0.012}
    assert start.total() == 0.950
    assert [m.name for m in start.marks] == ["watch_scheduled", "watch_running"]


def test_containerd_clock_ends_the_start_and_shows_what_kubelet_adds():
    start = watched_start([(0.010, pod("n1")), (0.950, pod("n1", True))], ANCHOR)
    inspect = {"sandbox": {"status": {"createdAt": rfc3339(ANCHOR + 25_000_000)}},
               "container": {"status": {"startedAt": rfc3339(ANCHOR + 410_000_000)}}}
    phases = start.against_runtime_clock(inspect)
    assert round(phases[CREATE_TO_SANDBOX], 6) == 0.025
    assert round(phases[CONTAINER_TO_RUNNING], 6) == 0.540
    assert round(start.total(), 6) == 0.410  # the runtime's start, not kubelet's next relist
    assert start.running_seconds == 0.950
    assert [m["mark"] for m in start.timeline()] == [
        "watch_scheduled", "cri_sandbox_created", "cri_container_started", "watch_running"]


def test_clocks_that_disagree_give_no_cross_clock_phase():
    start = watched_start([(0.3, pod("n1", True))], ANCHOR)
    before_create = {"sandbox": {"status": {"createdAt": rfc3339(ANCHOR - 5 * 10**9)}},
                     "container": {"status": {"startedAt": rfc3339(ANCHOR + 10**8)}}}
    assert start.against_runtime_clock(before_create) == {}
    assert start.against_runtime_clock({}) == {}
    assert start.total() == 0.3


def test_only_events_with_micro_time_become_marks():
    start = watched_start([(0.5, pod("n1", True))], ANCHOR)
    events = [{"reason": "Scheduled", "eventTime": rfc3339(ANCHOR + 8_123_000)[:-4] + "Z"},
              {"reason": "Started", "eventTime": None,
               "firstTimestamp": "2025-11-24T16:00:00Z"}]
    marks = event_marks(events, start)
    assert [(m.name, round(m.seconds, 6)) for m in marks] == [("event_Scheduled", 0.008123)]


# ---- the watch: a real chunked HTTP stream that goes quiet ----

class _Stream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    quiet = threading.Event()

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        line = b'{"type":"ADDED","object":{"metadata":{"resourceVersion":"7"}}}\n'
        self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
        self.wfile.flush()
        self.quiet.wait(30)  # the pod does not change again

    def log_message(self, *args):
        pass


class _Core:
    """Just what PodWatch asks of CoreV1Api: a list, then a watch as a raw response."""

    def __init__(self, url: str):
        self.url = url
        self.pool = urllib3.PoolManager()

    def list_namespaced_pod(self, namespace, watch=False, **kwargs):
        if not watch:
            return type("L", (), {"metadata": type("M", (), {"resource_version": "1"})()})()
        return self.pool.request("GET", self.url, preload_content=False)


def test_closing_a_watch_does_not_wait_for_the_next_change():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Stream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with PodWatch(_Core(f"http://127.0.0.1:{server.server_port}/"), "ns", "p", 30) as w:
            item = w.next(5)
            assert item is not None and item[1] == "ADDED" and w.version == "7"
            began = time.monotonic()
        assert time.monotonic() - began < 2, "close() waited for the stream's next line"
    finally:
        _Stream.quiet.set()
        server.shutdown()
        server.server_close()
