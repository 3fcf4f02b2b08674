"""The API client's flow control (sandcheck/clusters/apiflow.py) against a real HTTP server
on 127.0.0.1 that answers a scripted sequence (429 with Retry-After, 503, 200), through a
real kubernetes ApiClient.

Nothing here judges wall time: waits are recorded by an injected sleep (the retries do
not really sleep), the rate is checked on an injected clock, and the in-flight bound is
seen by the server holding its requests until the test lets them go.
"""

from __future__ import annotations

import http.server
import json
import logging
import threading
from collections import Counter
from collections.abc import Iterator

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from sandcheck.clusters.apicount import count_requests
from sandcheck.clusters.apiflow import (
    STREAM_CONNECTIONS,
    ApiFlow,
    FlowLimits,
    TokenBucket,
    flow_of,
    handshake_status,
    idempotent,
)
from sandcheck.clusters.kubeapi import KubeApi, kubectl_binary, kubectl_requests
from sandcheck.errors import UserError
from sandcheck.timeouts import TIMEOUTS, wait_until

HOLD = 30.0
"""How long the server holds a request at most (the test releases it long before)."""
PATIENCE = 30.0
"""How long the test waits for threads to reach a state it needs (never a pass criterion)."""

POD_LIST = {"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"},
            "items": []}
POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "x"}}


class ScriptedApi:
    """An API server stand-in: each request takes the next scripted (status, headers) of
    its method (200 once the script ran out), with a plausible JSON body; a watch streams
    one event and stays open until ``end_streams``. ``hold`` keeps every request
    waiting until ``release``; ``active``/``max_active`` count requests being handled."""

    def __init__(self) -> None:
        self.script: dict[str, list[tuple[int, dict[str, str]]]] = {}
        self.seen: list[tuple[str, str]] = []
        self.active = 0
        self.max_active = 0
        self.gate = threading.Event()
        self.gate.set()
        self.streams_end = threading.Event()
        self.lock = threading.Lock()
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go at once, as a server's

            def handle_one(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                with api.lock:
                    api.seen.append((self.command, self.path))
                    api.active += 1
                    api.max_active = max(api.max_active, api.active)
                    steps = api.script.get(self.command) or []
                    status, headers = steps.pop(0) if steps else (None, {})
                api.gate.wait(HOLD)
                with api.lock:  # done before the answer goes: the client holds its slot
                    api.active -= 1
                if status is None and "watch=true" in self.path:
                    return self.stream()
                status = status or (201 if self.command == "POST" else 200)
                body = (POD_LIST if self.command == "GET" else POD) if status < 300 else {
                    "kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "code": status, "message": f"scripted {status}"}
                data = json.dumps(body).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def stream(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                line = json.dumps({"type": "ADDED", "object": POD}).encode() + b"\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                self.wfile.flush()
                api.streams_end.wait(HOLD)
                self.wfile.write(b"0\r\n\r\n")

            do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = handle_one  # noqa: N815

            def log_message(self, *args) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def then(self, method: str, *steps: int | tuple[int, dict[str, str]]) -> None:
        self.script.setdefault(method, []).extend(
            s if isinstance(s, tuple) else (s, {}) for s in steps)

    def methods(self) -> Counter[str]:
        return Counter(m for m, _ in self.seen)

    def close(self) -> None:
        self.gate.set()
        self.streams_end.set()
        self.server.shutdown()
        self.server.server_close()


class Sleeps(list):
    """An injected sleep: records each wait, waits for nothing."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def api() -> Iterator[ScriptedApi]:
    server = ScriptedApi()
    yield server
    server.close()


def connect(api: ScriptedApi, limits: FlowLimits, pool: int | None = None,
            **flow_kwargs) -> tuple[client.CoreV1Api, ApiFlow, Sleeps]:
    sleeps = flow_kwargs.pop("sleep", None) or Sleeps()
    flow = ApiFlow(limits, sleep=sleeps, jitter=lambda: 1.0, **flow_kwargs)
    configuration = client.Configuration(host=api.url)
    flow.configure(configuration)
    configuration.connection_pool_maxsize = pool or limits.pool_size
    api_client = client.ApiClient(configuration)
    flow.attach(api_client)
    return client.CoreV1Api(api_client), flow, sleeps


# -- retries -----------------------------------------------------------------------------


def test_a_429_and_a_503_are_retried_and_retry_after_is_the_least_wait(api):
    api.then("GET", (429, {"Retry-After": "3"}), 503)
    core, flow, sleeps = connect(api, FlowLimits())
    assert core.list_namespaced_pod("x", _request_timeout=TIMEOUTS.api_call).items == []
    assert api.methods() == {"GET": 3}
    # Retry-After 3 over a first backoff of 0.25 s; then the doubled backoff (jitter 1.0).
    assert sleeps == [3.0, TIMEOUTS.api_backoff_base * 2]
    snap = flow.snapshot()
    assert snap["requests"] == {"GET": 3}
    assert (snap["retries"], snap["throttled_429"], snap["server_errors_5xx"],
            snap["unrecovered"], snap["gave_up"]) == (2, 1, 1, 0, 0)
    assert snap["backoff_seconds"] == 3.5


def test_backoff_doubles_to_its_cap_with_jitter_in_the_upper_half():
    low = ApiFlow(jitter=lambda: 0.0)
    high = ApiFlow(jitter=lambda: 1.0)
    steps = [min(TIMEOUTS.api_backoff_max, TIMEOUTS.api_backoff_base * 2 ** n)
             for n in range(8)]
    assert [high.backoff(n, None) for n in range(8)] == steps
    assert [low.backoff(n, None) for n in range(8)] == [s / 2 for s in steps]
    assert high.backoff(0, 7.0) == 7.0 and high.backoff(6, 1.0) == TIMEOUTS.api_backoff_max


def test_a_call_gives_up_after_its_retries_with_an_error_that_says_so(api):
    api.then("GET", *[503] * 10)
    core, flow, sleeps = connect(api, FlowLimits(max_retries=3))
    with pytest.raises(ApiException) as caught:
        core.read_namespaced_pod("p", "x", _request_timeout=TIMEOUTS.api_call)
    assert caught.value.status == 503
    assert "gave up after 4 attempts" in caught.value.reason
    assert "3 retries spent" in caught.value.reason
    assert "503, 503, 503, 503" in caught.value.reason
    assert "scripted 503" in caught.value.body  # the server's own Status stays readable
    assert api.methods() == {"GET": 4} and len(sleeps) == 3
    snap = flow.snapshot()
    assert (snap["retries"], snap["server_errors_5xx"], snap["unrecovered"],
            snap["gave_up"]) == (3, 4, 1, 1)


def test_a_retry_after_beyond_the_budget_ends_the_call_at_once(api):
    api.then("GET", (429, {"Retry-After": str(int(TIMEOUTS.api_retry_budget) + 1)}))
    core, flow, sleeps = connect(api, FlowLimits())
    with pytest.raises(ApiException) as caught:
        core.list_namespaced_pod("x", _request_timeout=TIMEOUTS.api_call)
    assert caught.value.status == 429 and "retry budget" in caught.value.reason
    assert sleeps == [] and api.methods() == {"GET": 1}
    assert flow.snapshot()["gave_up"] == 1


def test_a_post_is_retried_on_429_but_on_5xx_only_when_idempotent(api):
    core, flow, _ = connect(api, FlowLimits())
    api.then("POST", (429, {"Retry-After": "1"}))
    core.create_namespaced_pod("x", POD, _request_timeout=TIMEOUTS.api_call)
    assert api.methods()["POST"] == 2  # turned away before it ran: safe to send again

    api.then("POST", 503)
    with pytest.raises(ApiException) as caught:
        core.create_namespaced_pod("x", POD, _request_timeout=TIMEOUTS.api_call)
    assert caught.value.status == 503 and "gave up" not in (caught.value.reason or "")
    assert api.methods()["POST"] == 3  # not repeated: it may have been stored

    api.then("POST", 503)
    with idempotent():
        core.create_namespaced_pod("x", POD, _request_timeout=TIMEOUTS.api_call)
    assert api.methods()["POST"] == 5
    snap = flow.snapshot()
    assert snap["requests"] == {"POST": 5}
    assert (snap["retries"], snap["throttled_429"], snap["server_errors_5xx"],
            snap["unrecovered"]) == (2, 1, 2, 1)


def test_delete_is_retried_on_5xx(api):
    api.then("DELETE", 502, 504)
    core, flow, _ = connect(api, FlowLimits())
    core.delete_namespaced_pod("p", "x", _request_timeout=TIMEOUTS.api_call)
    assert api.methods() == {"DELETE": 3} and flow.snapshot()["retries"] == 2


def test_an_exec_handshake_is_retried_on_429_not_on_5xx():
    flow = ApiFlow(sleep=Sleeps(), jitter=lambda: 1.0)
    refusals = [ApiException(status=0, reason="Handshake status 429 Too Many Requests -+-+- "
                             "{'retry-after': '2'} -+-+- b''")]

    def handshake():
        if refusals:
            raise refusals.pop()
        return "ws"

    assert flow.call("EXEC", handshake) == "ws"
    assert flow.sleep == [2.0]

    def refused():
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise ApiException(status=0, reason="Handshake status 500 Internal Server "
                               "Error -+-+- {} -+-+- b''") from None

    with pytest.raises(ApiException) as caught:
        flow.call("EXEC", refused)
    assert isinstance(caught.value.__context__, KeyboardInterrupt)  # kubeexec looks here
    snap = flow.snapshot()
    assert snap["requests"] == {"EXEC": 3}
    assert (snap["retries"], snap["throttled_429"], snap["server_errors_5xx"],
            snap["unrecovered"]) == (1, 1, 1, 1)
    assert handshake_status("connection refused") == (None, None)


# -- the in-flight bound -------------------------------------------------------------------


def _burst(core: client.CoreV1Api, threads: int) -> tuple[list[threading.Thread], list]:
    errors: list[BaseException] = []

    def one():
        try:
            core.list_namespaced_pod("x", _request_timeout=TIMEOUTS.api_call)
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    started = [threading.Thread(target=one, daemon=True) for _ in range(threads)]
    for t in started:
        t.start()
    return started, errors


def _join(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.join(PATIENCE)
    assert not any(t.is_alive() for t in threads), "requests still waiting for a slot"


def test_fifty_threads_never_exceed_the_in_flight_bound(api):
    core, flow, _ = connect(api, FlowLimits(qps=0, max_in_flight=4))
    api.gate.clear()  # the server holds every request until released
    threads, errors = _burst(core, 50)
    wait_until(lambda: (api.active == 4 and flow.waiting == 46) or None, PATIENCE,
               "4 requests at the server and 46 waiting for a slot",
               interval=TIMEOUTS.exit_poll,
               state=lambda: f"active {api.active}, waiting {flow.waiting}")
    assert flow.in_flight == 4
    api.gate.set()
    _join(threads)
    assert not errors
    assert api.max_active == 4 and flow.peak_in_flight == 4
    assert flow.snapshot()["requests"] == {"GET": 50} and api.methods() == {"GET": 50}


@pytest.mark.parametrize("pool", [None, 10], ids=["flow-sized", "client-default"])
def test_the_pool_holds_every_request_in_flight(api, caplog, pool):
    """32 requests at the server at once: a pool of the flow's size takes every connection
    back; the client's default (5 per CPU; 10 here) drops the rest with a warning."""
    limits = FlowLimits(qps=0, max_in_flight=32)
    core, flow, _ = connect(api, limits, pool=pool)
    api.gate.clear()
    caplog.set_level(logging.WARNING, logger="urllib3.connectionpool")
    threads, errors = _burst(core, 50)
    wait_until(lambda: api.active == 32 or None, PATIENCE, "32 requests at the server",
               interval=TIMEOUTS.exit_poll, state=lambda: f"active {api.active}")
    api.gate.set()
    _join(threads)
    assert not errors and flow.peak_in_flight == 32
    full = [r for r in caplog.records if "Connection pool is full" in r.getMessage()]
    assert (len(full) == 0) if pool is None else (len(full) > 0)
    assert limits.pool_size == 32 + STREAM_CONNECTIONS


def test_a_watch_holds_no_slot_once_its_headers_arrived(api):
    core, flow, _ = connect(api, FlowLimits(qps=0, max_in_flight=1))
    watch = core.list_namespaced_pod("x", watch=True, _preload_content=False,
                                     _request_timeout=(TIMEOUTS.api_call, HOLD))
    assert json.loads(watch.readline())["type"] == "ADDED"
    assert flow.in_flight == 0 and flow.streams_open == 1
    # The one slot is free for other requests while the watch stays open.
    threads, errors = _burst(core, 3)
    _join(threads)
    assert not errors and api.methods() == {"GET": 4}
    watch.close()
    snap = flow.snapshot()
    assert flow.streams_open == 0 and snap["peak_streams_open"] == 1
    assert snap["peak_in_flight"] == 1 and snap["requests"] == {"GET": 4}


# -- the rate --------------------------------------------------------------------------------


class FrozenClock:
    """A clock that moves only when told (``advance``), or by each sleep with ``moving``."""

    def __init__(self, moving: bool = False):
        self.now = 1000.0
        self.moving = moving
        self.sleeps = Sleeps()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if self.moving:
            self.now += seconds


def test_the_bucket_lets_a_burst_through_then_paces_at_qps():
    clock = FrozenClock()
    bucket = TokenBucket(qps=10, burst=5, clock=clock, sleep=clock.sleep)
    assert [bucket.reserve() for _ in range(5)] == [0.0] * 5
    assert bucket.reserve() == pytest.approx(0.1)
    assert bucket.reserve() == pytest.approx(0.2)
    clock.now += 1.0  # ten tokens came due; two of them were spent in advance
    assert [bucket.reserve() for _ in range(5)] == [0.0] * 5
    assert bucket.reserve() == pytest.approx(0.1)
    clock.now += 60.0  # a long pause refills to the burst, never beyond
    assert [bucket.reserve() for _ in range(5)] == [0.0] * 5
    assert bucket.reserve() > 0


def test_fifty_threads_get_their_tokens_no_faster_than_the_rate(api):
    """200 requests from 50 threads with a burst of 100 at 50 QPS, the clock frozen: the
    first 100 go at once, every later one is due 1/50 s after the one before (the waits
    are exactly 1/50, 2/50 ... 100/50), so the last is due no sooner than 2 s on."""
    clock = FrozenClock()
    core, flow, _ = connect(api, FlowLimits(qps=50, burst=100), clock=clock,
                            sleep=clock.sleep)
    errors: list[BaseException] = []

    def four():
        try:
            for _ in range(4):
                core.list_namespaced_pod("x", _request_timeout=TIMEOUTS.api_call)
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=four, daemon=True) for _ in range(50)]
    for t in threads:
        t.start()
    _join(threads)
    assert not errors and api.methods() == {"GET": 200}
    assert flow.bucket.taken == 200
    waits = sorted(clock.sleeps)
    assert len(waits) == 100  # the first 100 tokens were in the bucket
    assert waits == pytest.approx([n / 50 for n in range(1, 101)])
    assert flow.snapshot()["token_wait_seconds"] == pytest.approx(sum(waits), abs=1e-3)


def test_requests_sent_by_any_moment_stay_within_burst_plus_rate(api):
    """A clock that sleeps move: at the moment each request goes, the requests sent so far
    are at most burst + qps × elapsed (counts over every window from the start)."""
    clock = FrozenClock(moving=True)
    start = clock.now
    sent_at: list[float] = []
    core, flow, _ = connect(api, FlowLimits(qps=20, burst=5), clock=clock, sleep=clock.sleep)
    inner = flow.bucket.take

    def take() -> float:
        slept = inner()
        sent_at.append(clock.now)
        return slept

    flow.bucket.take = take
    for _ in range(45):
        core.list_namespaced_pod("x", _request_timeout=TIMEOUTS.api_call)
    for n, at in enumerate(sent_at, 1):
        assert n <= 5 + 20 * (at - start) + 1e-9, f"request {n} went at {at - start:.3f}s"
    assert sent_at[-1] - start == pytest.approx((45 - 5) / 20)


# -- kubectl, the backend's client, the options ------------------------------------------------


STRUCTURED = ('I1207 09:13:15.094490   10107 round_trippers.go:632] "Response" verb="GET" '
              'url="https://127.0.0.1:6443/api/v1/namespaces/x/pods/p" status="404 Not Found" '
              'milliseconds=2\n')
PLAIN = ("I0101 10:00:00.000001    4242 round_trippers.go:553] DELETE https://h/api 200 OK "
         "in 3 milliseconds\n")
UNANSWERED = ('I1207 09:13:15.191736   10144 round_trippers.go:632] "Response" verb="POST" '
              'url="http://127.0.0.1:1/x" status="" milliseconds=0\n')


def test_kubectl_request_lines_are_counted_and_taken_out():
    stderr = (STRUCTURED + 'Error from server (NotFound): pods "p" not found\n' + PLAIN
              + UNANSWERED + "W0101 10:00:00.1    1 warnings.go:70] a server warning\n")
    found, rest = kubectl_requests(stderr)
    assert found == [("GET", 404), ("DELETE", 200), ("POST", None)]
    assert rest == ('Error from server (NotFound): pods "p" not found\n'
                    "W0101 10:00:00.1    1 warnings.go:70] a server warning\n")
    flow = ApiFlow()
    flow.count_kubectl(found + [("GET", 429), ("GET", 503)])
    snap = flow.snapshot()
    assert snap["requests"] == {"KUBECTL_DELETE": 1, "KUBECTL_GET": 3, "KUBECTL_POST": 1}
    assert (snap["transport_errors"], snap["throttled_429"], snap["server_errors_5xx"]) == (
        1, 1, 1)


def _kubeconfig(tmp_path, url: str):
    path = tmp_path / "kubeconfig"
    path.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "{url}"}}}}]
users: [{{name: u, user: {{}}}}]
contexts: [{{name: c, context: {{cluster: c, user: u}}}}]
current-context: c
""")
    return path


class _Backend(KubeApi):
    def __init__(self, kubeconfig):
        self.kubeconfig_path = kubeconfig
        self.api_client = None


def test_the_backend_client_goes_through_its_flow_and_kubectl_is_counted(api, tmp_path):
    backend = _Backend(_kubeconfig(tmp_path, api.url))
    backend.limit_api({"api_qps": 5.0, "api_burst": 7, "api_max_in_flight": 3})
    backend.connect()
    assert backend.api_client.configuration.connection_pool_maxsize == 3 + STREAM_CONNECTIONS
    assert flow_of(backend.api_client) is backend.api_flow is count_requests(backend)
    backend.core.list_namespaced_pod("x", _request_timeout=TIMEOUTS.api_call)
    assert backend.api_flow.snapshot()["limits"] == {
        "qps": 5.0, "burst": 7, "max_in_flight": 3, "max_retries": 10}
    if kubectl_binary() is None:
        pytest.skip("no kubectl (`sandcheck provision --kubernetes` builds one)")
    proc = backend.kubectl("get", "--raw", "/api/v1/namespaces/x/pods")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "" and json.loads(proc.stdout)["kind"] == "PodList"
    api.then("GET", 404)
    proc = backend.kubectl("get", "--raw", "/api/v1/namespaces/x/pods/gone")
    assert proc.returncode != 0 and "round_trippers" not in proc.stderr
    assert "scripted 404" in proc.stderr or "NotFound" in proc.stderr, proc.stderr
    requests = backend.api_flow.snapshot()["requests"]
    assert requests["GET"] == 1 and requests["KUBECTL_GET"] == 2, requests
    assert backend.api_flow.total() == 3


def test_count_requests_keeps_counting_a_client_without_a_flow(api):
    backend = type("B", (), {})()
    backend.api_client = client.ApiClient(client.Configuration(host=api.url))
    counter = count_requests(backend)
    client.CoreV1Api(backend.api_client).list_namespaced_pod(
        "x", _request_timeout=TIMEOUTS.api_call)
    assert count_requests(backend) is counter and counter.total() == 1


def test_limits_come_from_the_options_and_bad_ones_are_refused():
    assert FlowLimits.from_options({}) == FlowLimits()
    assert FlowLimits.from_options({"api_qps": None, "api_burst": None}) == FlowLimits()
    assert FlowLimits.from_options({"api_qps": 0}).qps == 0  # no rate limit
    assert ApiFlow(FlowLimits(qps=0)).bucket is None
    for bad in ({"api_qps": -1}, {"api_burst": 0}, {"api_max_in_flight": 0}):
        with pytest.raises(UserError, match="--api-"):
            FlowLimits.from_options(bad)
    defaults = FlowLimits()
    assert (defaults.qps, defaults.burst, defaults.max_in_flight) == (50.0, 100, 32)
