"""Client-side flow control of a backend's Kubernetes API client: what a good citizen of a
shared API server does when a certify run drives thousands of cells from many threads.

Every REST request of a backend's ApiClient passes its ApiFlow (``attach`` rewires that
instance's ``rest_client.request``; the class and other clients are untouched):

- **rate**: a token bucket of ``qps`` and ``burst``, as client-go's flowcontrol. A request
  reserves a token and sleeps until it is due; every retry takes a token of its own.
- **in flight**: at most ``max_in_flight`` requests at once. A request holds its slot until
  its answer is read, except a long-running one (a watch, a followed log): it holds the
  slot until the response headers arrive, then counts among the open *streams* (a gauge
  and its peak). The API server draws the same line (``--max-requests-inflight`` leaves
  long-running requests out; API Priority and Fairness seats a watch for its
  initialisation only), and a watch kept for the minutes its pods take to start would
  otherwise hold a slot for minutes: a fleet's watches could starve the bound. (The REST
  client returns once the headers are in; the flow reads an ordinary answer's body in the
  slot, so a non-watch call made with ``_preload_content=False`` finds it in ``.data``.)
- **retries**: 429 (API Priority and Fairness or the max-in-flight filter turned the
  request away before it ran) is retried for every method; 500, 502, 503 and 504 only for
  methods that are safe to repeat (GET, HEAD, OPTIONS, DELETE) and for calls made under
  ``idempotent()`` (a create that reached storage before the error comes back 409
  AlreadyExists when repeated: only a caller that takes 409 as done may say so). The wait
  doubles from TIMEOUTS.api_backoff_base to api_backoff_max, with jitter; a Retry-After
  the server sends is the least wait. A call gives up after ``max_retries`` retries, or
  when its next wait would pass TIMEOUTS.api_retry_budget, with an ApiException of the
  last status whose reason says that it gave up and after what. Transport errors are not
  retried here (urllib3's pool retries a connection that fails, as it always did, but no
  longer repeats a 429 or 503 by itself: ``configure``).
- **counters** (``snapshot()``, for the run's results): requests sent by method (retries
  included; execs as EXEC; kubectl's own as KUBECTL_<VERB>), retries, 429s and 5xx seen,
  calls that ended on one (unrecovered), transport errors, peak in flight, peak streams
  open, and the seconds spent waiting for tokens and in backoff.

An exec is a websocket of its own ApiClient (``kubeexec``): ``through()`` paces its
handshake the same way (a token, a slot until the upgrade, 429 retried: the command did
not start) and counts it as EXEC.
"""

from __future__ import annotations

import contextvars
import random
import re
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sandcheck.errors import UserError
from sandcheck.timeouts import TIMEOUTS

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})
"""Methods repeated after a 5xx: the server applies them once however often they come."""
THROTTLED = 429
SERVER_ERRORS = frozenset({500, 502, 503, 504})
"""The 5xx answers worth a retry (a server restarting, a proxy between, a timeout)."""
STREAM_CONNECTIONS = 64
"""Pool room beyond the in-flight bound, for the connections open streams hold."""
TRANSPORT_RETRIES = 3
"""urllib3's own retries of a connection that fails (its default count), for reads and
connections that never reached the server; never of an answer."""
_STREAM_QUERY = re.compile(r"[?&](watch|follow)=true(&|$)")

_idempotent: contextvars.ContextVar[bool] = contextvars.ContextVar("api_idempotent",
                                                                   default=False)


@contextmanager
def idempotent() -> Iterator[None]:
    """Calls made inside are retried on 5xx whatever their method: the caller takes the
    answer of a repeated write (409 AlreadyExists of a create) as done."""
    token = _idempotent.set(True)
    try:
        yield
    finally:
        _idempotent.reset(token)


@dataclass(frozen=True)
class FlowLimits:
    """A backend's client-side limits; defaults suit a real API server shared with others
    (kubectl's client allows 50 QPS with a burst of 300)."""

    qps: float = 50.0
    """Requests per second the bucket refills; 0: no rate limit."""
    burst: int = 100
    max_in_flight: int = 32
    max_retries: int = 10
    """Retries of one call (client-go's for a Retry-After)."""

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> FlowLimits:
        """The limits of ``--api-qps``, ``--api-burst`` and ``--api-max-in-flight``
        (BackendSettings.options); a missing option keeps its default."""
        base = cls()

        def pick(key: str, default: Any) -> Any:
            value = options.get(key)
            return default if value is None else value

        limits = cls(qps=float(pick("api_qps", base.qps)),
                     burst=int(pick("api_burst", base.burst)),
                     max_in_flight=int(pick("api_max_in_flight", base.max_in_flight)))
        if limits.qps < 0:
            raise UserError(f"--api-qps {limits.qps:g}: give a rate of 0 (no limit) or more")
        if limits.burst < 1:
            raise UserError(f"--api-burst {limits.burst}: give 1 or more")
        if limits.max_in_flight < 1:
            raise UserError(f"--api-max-in-flight {limits.max_in_flight}: give 1 or more")
        return limits

    @property
    def pool_size(self) -> int:
        """urllib3 connections the ApiClient keeps: one per request in flight, and room for
        the open streams (beyond it threads open and drop connections, with urllib3's
        "Connection pool is full" warning)."""
        return self.max_in_flight + STREAM_CONNECTIONS


class TokenBucket:
    """``burst`` tokens, refilled at ``qps``. A taker reserves the next token, which may
    leave the bucket below zero, and sleeps until it is due (golang.org/x/time/rate's
    reservations, which client-go's limiter uses): takers are served in order, and by any
    moment t no more than ``burst + qps * t`` tokens have come due."""

    def __init__(self, qps: float, burst: int, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.qps = qps
        self.burst = burst
        self.clock = clock
        self.sleep = sleep
        self.tokens = float(burst)
        self.stamp = clock()
        self.taken = 0
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Take a token; the seconds until it is due (0 when the bucket had one)."""
        with self._lock:
            now = self.clock()
            self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.qps)
            self.stamp = now
            self.tokens -= 1
            self.taken += 1
            return 0.0 if self.tokens >= 0 else -self.tokens / self.qps

    def take(self) -> float:
        """Take a token, sleeping until it is due; the seconds slept."""
        due = self.reserve()
        if due > 0:
            self.sleep(due)
        return due


@dataclass
class _Attempt:
    """One try of a call: the status it met (None: no HTTP status to judge), the
    Retry-After the server sent, and what the call returns (or raises) if it ends here."""

    status: int | None
    retry_after: float | None
    finish: Callable[[], Any]
    give_up: Callable[[str], Any]
    """Raise the error of a call that gave up; the argument says why."""


class ApiFlow:
    """Rate, in-flight bound, retries and counters of one backend's API requests."""

    def __init__(self, limits: FlowLimits | None = None, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 jitter: Callable[[], float] = random.random):
        self.limits = limits or FlowLimits()
        self.bucket = (TokenBucket(self.limits.qps, self.limits.burst, clock, sleep)
                       if self.limits.qps > 0 else None)
        self.sleep = sleep
        self.jitter = jitter
        self._slots = threading.BoundedSemaphore(self.limits.max_in_flight)
        self._lock = threading.RLock()
        """Reentrant: a stream's end is counted from a finalizer, which the garbage
        collector may run in a thread that holds the lock."""
        self.requests: Counter[str] = Counter()
        self.events: Counter[str] = Counter()
        """retries, throttled_429, server_errors_5xx, unrecovered, gave_up, transport_errors"""
        self.in_flight = 0
        self.peak_in_flight = 0
        self.waiting = 0
        """Requests waiting for an in-flight slot now."""
        self.streams_open = 0
        self.peak_streams_open = 0
        self.token_wait_seconds = 0.0
        self.backoff_seconds = 0.0

    # -- wiring ----------------------------------------------------------------------------

    def configure(self, configuration: Any) -> None:
        """What the client's configuration must say before its ApiClient is made (its
        REST client reads it then): a connection pool for ``limits.pool_size``, and urllib3
        retrying only connections that fail before an answer. urllib3's default would also
        repeat a 429 or 503 carrying Retry-After by itself, sleeping in the request's
        in-flight slot, unseen by the counters."""
        from urllib3.util.retry import Retry

        configuration.connection_pool_maxsize = self.limits.pool_size
        configuration.retries = Retry(total=TRANSPORT_RETRIES, status=0,
                                      respect_retry_after_header=False,
                                      raise_on_status=False)

    def attach(self, api_client: Any) -> None:
        """Send every request of ``api_client`` through this flow (once per client)."""
        if _FLOWS.get(api_client) is self:
            return
        rest = api_client.rest_client
        inner = rest.request

        def request(method, url, *args, **kwargs):
            return self.rest_request(inner, method, url, *args, **kwargs)

        rest.request = request
        _FLOWS[api_client] = self

    # -- the request path ------------------------------------------------------------------

    def rest_request(self, inner: Callable[..., Any], method: str, url: str,
                     *args: Any, **kwargs: Any) -> Any:
        """``inner`` (the REST client's own request) under the flow's rules."""
        method = str(method).upper()
        streaming = bool(_STREAM_QUERY.search(url))

        def once() -> _Attempt:
            response = inner(method, url, *args, **kwargs)
            status = response.status
            if streaming and 200 <= status <= 299:
                self._track_stream(response)
            else:
                response.read()  # the answer is read in the slot; RESTResponse keeps it
            return _Attempt(status, retry_after(response.headers), lambda: response,
                            lambda why: _raise_given_up(response, why))

        may_repeat = method in SAFE_METHODS or _idempotent.get()
        return self._paced(method, once, may_repeat)

    def call(self, kind: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` as one request counted as ``kind`` (an exec handshake):
        paced, in a slot until it returns, retried when it raises an ApiException whose
        reason carries a websocket handshake's 429."""
        from kubernetes.client.rest import ApiException

        def once() -> _Attempt:
            try:
                value = fn(*args, **kwargs)
            except ApiException as exc:
                return self._refused(exc)
            return _Attempt(None, None, lambda: value, lambda why: value)

        return self._paced(kind, once, may_repeat=False)

    def _refused(self, error: Any) -> _Attempt:
        """The attempt of a call that raised ``error`` (an ApiException): re-raised as it
        is (a Ctrl-C it carries as its context stays there), its reason extended when the
        call gives up."""
        status, after = handshake_status(str(error.reason))
        if status is None:  # no answer: the connection or the handshake failed
            self._add("transport_errors")

        def finish():
            raise error

        def give_up(why: str):
            error.reason = f"{error.reason} ({why})"
            raise error

        return _Attempt(status, after, finish, give_up)

    def _paced(self, kind: str, once: Callable[[], _Attempt], may_repeat: bool) -> Any:
        statuses: list[int] = []
        waited = 0.0
        for attempt in range(self.limits.max_retries + 1):
            if attempt:
                self._add("retries")
            self._take_token()
            with self._slot():
                self._count(kind)
                try:
                    outcome = once()
                except Exception:
                    self._add("transport_errors")
                    raise
            status = outcome.status
            if status is None or not (status == THROTTLED or status >= 500):
                return outcome.finish()
            statuses.append(status)
            self._add("throttled_429" if status == THROTTLED else "server_errors_5xx")
            if not (status == THROTTLED or (status in SERVER_ERRORS and may_repeat)):
                self._add("unrecovered")
                return outcome.finish()
            delay = self.backoff(attempt, outcome.retry_after)
            why = None
            if attempt == self.limits.max_retries:
                why = f"{self.limits.max_retries} retries spent"
            elif waited + delay > TIMEOUTS.api_retry_budget:
                why = (f"the next wait of {delay:.1f}s would pass the retry budget of "
                       f"{TIMEOUTS.api_retry_budget:.0f}s")
            if why is not None:
                self._add("unrecovered")
                self._add("gave_up")
                return outcome.give_up(
                    f"gave up after {attempt + 1} attempts and {waited:.1f}s of backoff, "
                    f"{why}; statuses {', '.join(map(str, statuses))}")
            self.sleep(delay)
            waited += delay
            with self._lock:
                self.backoff_seconds += delay
        raise AssertionError("unreachable: the last attempt returns or gives up")

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        """The wait before retry ``attempt + 1``: base × 2^attempt up to the cap, the upper
        half of it drawn at random (so retries of many threads spread), never below the
        server's Retry-After."""
        step = min(TIMEOUTS.api_backoff_max, TIMEOUTS.api_backoff_base * 2 ** attempt)
        delay = step / 2 + step / 2 * self.jitter()
        return max(delay, retry_after) if retry_after is not None else delay

    # -- bookkeeping -----------------------------------------------------------------------

    def _take_token(self) -> None:
        if self.bucket is not None:
            slept = self.bucket.take()
            if slept:
                with self._lock:
                    self.token_wait_seconds += slept

    @contextmanager
    def _slot(self) -> Iterator[None]:
        with self._lock:
            self.waiting += 1
        try:
            self._slots.acquire()
        finally:
            with self._lock:
                self.waiting -= 1
        with self._lock:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            yield
        finally:
            with self._lock:
                self.in_flight -= 1
            self._slots.release()

    def _track_stream(self, response: Any) -> None:
        """Count ``response`` (a RESTResponse) among the open streams until its urllib3
        response is closed or hands its connection back, whichever comes first."""
        raw = getattr(response, "response", response)
        with self._lock:
            self.streams_open += 1
            self.peak_streams_open = max(self.peak_streams_open, self.streams_open)
        ended = threading.Event()

        def end() -> None:
            with self._lock:
                if ended.is_set():
                    return
                ended.set()
                self.streams_open -= 1

        for name in ("close", "release_conn"):
            own = getattr(raw, name, None)
            if own is None:
                continue

            def ending(*a, _own=own, **kw):
                end()
                return _own(*a, **kw)

            try:
                setattr(raw, name, ending)
            except AttributeError:  # a response type without instance attributes
                pass
        weakref.finalize(raw, end)

    def _count(self, kind: str) -> None:
        with self._lock:
            self.requests[kind] += 1

    def _add(self, event: str, n: int = 1) -> None:
        with self._lock:
            self.events[event] += n

    # -- kubectl ---------------------------------------------------------------------------

    def count_kubectl(self, found: list[tuple[str, int | None]]) -> None:
        """Count requests a kubectl run made, (verb, status or None for no answer), as
        KUBECTL_<VERB>, with their 429s, 5xx and failed connections."""
        with self._lock:
            for verb, status in found:
                self.requests[f"KUBECTL_{verb}"] += 1
                if status is None:
                    self.events["transport_errors"] += 1
                elif status == THROTTLED:
                    self.events["throttled_429"] += 1
                elif status >= 500:
                    self.events["server_errors_5xx"] += 1

    # -- what a run records ------------------------------------------------------------------

    def total(self) -> int:
        """Requests sent so far, of every kind."""
        with self._lock:
            return sum(self.requests.values())

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": dict(sorted(self.requests.items())),
                **{e: self.events[e] for e in ("retries", "throttled_429", "server_errors_5xx",
                                               "unrecovered", "gave_up", "transport_errors")},
                "peak_in_flight": self.peak_in_flight,
                "peak_streams_open": self.peak_streams_open,
                "token_wait_seconds": round(self.token_wait_seconds, 3),
                "backoff_seconds": round(self.backoff_seconds, 3),
                "limits": {"qps": self.limits.qps, "burst": self.limits.burst,
                           "max_in_flight": self.limits.max_in_flight,
                           "max_retries": self.limits.max_retries},
            }


_FLOWS: weakref.WeakKeyDictionary[Any, ApiFlow] = weakref.WeakKeyDictionary()


def flow_of(api_client: Any) -> ApiFlow | None:
    """The flow ``api_client``'s requests go through, None if it has none."""
    return _FLOWS.get(api_client) if api_client is not None else None


def through(api_client: Any, kind: str, fn: Callable[..., Any], *args: Any,
            **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` through ``api_client``'s flow as one ``kind`` request (an
    exec), or at once when the client has none."""
    flow = flow_of(api_client)
    if flow is None:
        return fn(*args, **kwargs)
    return flow.call(kind, fn, *args, **kwargs)


def retry_after(headers: Any) -> float | None:
    """Seconds of a Retry-After header (the API server sends whole seconds); None when
    absent or a date."""
    value = headers.get("Retry-After") if headers is not None else None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if seconds >= 0 else None


_HANDSHAKE = re.compile(r"Handshake status (\d{3})")
_HANDSHAKE_RETRY_AFTER = re.compile(r"'retry-after': '(\d+(?:\.\d+)?)'", re.IGNORECASE)


def handshake_status(reason: str) -> tuple[int | None, float | None]:
    """The HTTP status and Retry-After in the reason of a refused websocket handshake (the
    stream client raises ApiException(status=0) with the websocket error as reason)."""
    m = _HANDSHAKE.search(reason)
    after = _HANDSHAKE_RETRY_AFTER.search(reason)
    return (int(m.group(1)) if m else None), (float(after.group(1)) if after else None)


def _raise_given_up(response: Any, why: str) -> Any:
    from kubernetes.client.rest import ApiException

    raise ApiException(status=response.status, reason=f"{response.reason} ({why})",
                       http_resp=response)
