"""What the performance suite shares: the rule that it runs alone, its options, and the
pod starter that times each start the same way in every benchmark.

A start is timed by the backend (``pod.timings.phases``: runp/create/start on the node
backend, whatever a Kubernetes backend reports for its pods) plus the first exec output,
timed here with a monotonic clock around the exec call only. A failed start is recorded,
never retried; a benchmark fails only when more than ``FAILED_START_LIMIT`` of its
starts failed. No time is ever compared to a threshold.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest

from sandcheck.clusters.backends.base import TIMEOUTS, Pod, PodSpec
from sandcheck.clusters.catalog import Runtime
from sandcheck.clusters.host.workdir import OWNER_FILE, WORK_BASE
from sandcheck.fixtures.plugin import say
from sandcheck.fixtures.pods import require_runtime

FAILED_START_LIMIT = 0.2
"""A benchmark fails when more than this fraction of its measured starts failed."""
FIRST_EXEC = ["/bin/true"]
"""The cheapest command with an observable result: its exit status is the first output."""


# ---- this suite runs alone ----------------------------------------------------------------

def _xdist_worker_count(config: pytest.Config) -> int:
    workers = getattr(config, "workerinput", {}).get("workercount")
    if workers is None and os.environ.get("PYTEST_XDIST_WORKER_COUNT", "").isdigit():
        workers = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    if workers is None:
        wanted = config.getoption("numprocesses", default=None)
        if isinstance(wanted, str):
            wanted = int(wanted) if wanted.isdigit() else (os.cpu_count() or 1)
        workers = wanted or 0
    return int(workers)


def _refuse_parallel(workers: int) -> None:
    raise pytest.UsageError(
        f"run the performance suite without -n (pytest-xdist asked for {workers} "
        "workers): benchmarks that share the machine measure each other. Run "
        "`python -m pytest suites/performance` on its own, or deselect it with "
        "-m 'not performance'")


def _selects_performance(markexpr: str) -> bool:
    """Whether ``-m markexpr`` keeps a test marked only ``performance``."""
    if not markexpr:
        return True
    try:
        from _pytest.mark.expression import Expression

        return bool(Expression.compile(markexpr).evaluate(
            lambda name, **_: name == "performance"))
    except Exception:  # an unreadable expression: assume the suite is selected
        return True


def pytest_configure(config: pytest.Config) -> None:
    workers = _xdist_worker_count(config)
    if workers > 1 and _selects_performance(config.getoption("markexpr", default="")):
        _refuse_parallel(workers)
    for name, lowest in (("perf_runs", 1), ("perf_burst", 1), ("perf_idle_pods", 1),
                         ("perf_warmup", 0)):
        value = config.getoption(name, default=lowest)
        if value < lowest:
            flag = "--" + name.replace("_", "-")
            raise pytest.UsageError(f"{flag} {value}: must be at least {lowest}")


# ---- options and progress -------------------------------------------------------------------

@dataclass(frozen=True)
class PerfOptions:
    runs: int
    burst: int
    idle_pods: int
    warmup: int


@pytest.fixture(scope="session")
def perf_options(request: pytest.FixtureRequest) -> PerfOptions:
    opt = request.config.getoption
    return PerfOptions(runs=opt("perf_runs"), burst=opt("perf_burst"),
                       idle_pods=opt("perf_idle_pods"), warmup=opt("perf_warmup"))


@pytest.fixture(scope="session")
def progress(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """One short line on the terminal per runtime and phase."""
    return lambda line: say(request.config, f"[performance] {line}")


# ---- timing one start -----------------------------------------------------------------------

@dataclass
class StartSample:
    """One pod start: the backend's phases, the first exec, and what went wrong if it did."""

    runtime: str
    phases: dict[str, float] = field(default_factory=dict)
    backend_start: float | None = None
    """``pod.timings.total()`` when the backend reported phases."""
    first_exec: float | None = None
    create_wall: float | None = None
    """Monotonic seconds around the backend's create_pod call (the suite's view)."""
    began: float | None = None
    ended: float | None = None
    """Monotonic clock readings when create_pod was called and the first exec returned."""
    cri: dict[str, float] = field(default_factory=dict)
    """Seconds derived from the runtime's own timestamps (CRI status), when offered."""
    error: str | None = None
    detail: str = ""
    """The whole error text (diagnostics included) of a failed start."""
    pod: Pod | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def total(self) -> float | None:
        """The backend's start time (``timings.total()``: the sum of the phases over CRI,
        the monotonic time to Running on Kubernetes) plus the first exec; the wall time of
        create_pod when a backend reports no phases."""
        if not self.ok or self.first_exec is None:
            return None
        start = self.backend_start if self.backend_start is not None else self.create_wall
        return None if start is None else start + self.first_exec

    def row(self) -> dict[str, Any]:
        """Milliseconds, for evidence."""
        out: dict[str, Any] = {k.removesuffix("_seconds"): _ms(v) for k, v in self.phases.items()}
        out["first_exec"] = _ms(self.first_exec)
        out["total"] = _ms(self.total)
        if self.ok and self.create_wall is not None and self.first_exec is not None:
            out["wall"] = _ms(self.create_wall + self.first_exec)
        out.update({k.removesuffix("_seconds"): _ms(v) for k, v in self.cri.items()})
        if self.error:
            out["error"] = self.error[:300]
        return out


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


_RFC3339 = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$")


def timestamp_ns(value: Any) -> int | None:
    """Nanoseconds since the epoch from a CRI timestamp: an integer (or its decimal string)
    or RFC 3339 with up to nanosecond digits (crictl's JSON). None when absent or zero."""
    if isinstance(value, int):
        return value or None
    if not isinstance(value, str) or not value:
        return None
    if value.isdigit():
        return int(value) or None
    match = _RFC3339.match(value)
    if match is None:
        return None
    base, fraction, zone = match.groups()
    seconds = datetime.fromisoformat(base + ("+00:00" if zone == "Z" else zone)).timestamp()
    if seconds <= 0:
        return None  # Go's zero time: the event has not happened
    return int(seconds) * 1_000_000_000 + int((fraction or "0").ljust(9, "0"))


def cri_startup(pod: Pod) -> dict[str, float]:
    """Seconds from the sandbox's creation to its container's start, from the CRI status
    the runtime reports (``crictl inspectp``/``inspect``), for backends that offer it."""
    inspect = getattr(pod, "inspect", None)
    if inspect is None:
        return {}
    try:
        data = inspect()
    except Exception:  # diagnostics only: a pod that cannot be inspected has no CRI times
        return {}
    sandbox, container = data.get("sandbox"), data.get("container")
    if not isinstance(sandbox, dict) or not isinstance(container, dict):
        return {}
    created = timestamp_ns((sandbox.get("status") or {}).get("createdAt"))
    started = timestamp_ns((container.get("status") or {}).get("startedAt"))
    if created is None or started is None or started < created:
        return {}
    return {"cri_sandbox_to_container_seconds": (started - created) / 1e9}


class Bench:
    """Starts pods for a benchmark, times them, and deletes every pod it made."""

    def __init__(self, backend, options: PerfOptions):
        self.backend = backend
        self.options = options
        self._live: list[Pod] = []
        self._lock = threading.Lock()

    def spec(self, runtime: Runtime, role: str) -> PodSpec:
        return PodSpec(runtime=runtime, name_prefix=f"perf-{role}-{runtime.name}")

    def start(self, spec: PodSpec) -> StartSample:
        """Create a pod and exec its first command; the pod stays up (delete it)."""
        sample = StartSample(runtime=spec.runtime.name)
        sample.began = time.monotonic()
        try:
            pod = self.backend.create_pod(spec)
        except Exception as exc:  # a failed start is a measurement, not a crash
            sample.create_wall = time.monotonic() - sample.began
            sample.error, sample.detail = f"create_pod: {_one_line(exc)}", str(exc)[:3000]
            return sample
        sample.create_wall = time.monotonic() - sample.began
        with self._lock:
            self._live.append(pod)
        sample.pod = pod
        sample.phases = dict(pod.timings.phases)
        if sample.phases:
            sample.backend_start = pod.timings.total()
        mark = time.monotonic()
        try:
            result = pod.exec(FIRST_EXEC, timeout=TIMEOUTS.exec)
        except Exception as exc:
            sample.error, sample.detail = f"first exec: {_one_line(exc)}", str(exc)[:3000]
            return sample
        sample.ended = time.monotonic()
        sample.first_exec = sample.ended - mark
        if result.exit_code != 0:
            sample.error = (f"first exec {' '.join(FIRST_EXEC)} exited {result.exit_code}: "
                            f"{(result.stderr or result.stdout).strip()[:300]}")
        return sample

    def delete(self, sample_or_pod: StartSample | Pod | None) -> None:
        pod = sample_or_pod.pod if isinstance(sample_or_pod, StartSample) else sample_or_pod
        if pod is None:
            return
        with self._lock:
            if pod in self._live:
                self._live.remove(pod)
        self.backend.delete_pod(pod)

    @staticmethod
    def read_cri_times(sample: StartSample) -> None:
        """Fill ``sample.cri`` from the runtime's own timestamps (outside any timer)."""
        if sample.ok and sample.pod is not None:
            sample.cri = cri_startup(sample.pod)

    def start_and_delete(self, spec: PodSpec) -> StartSample:
        sample = self.start(spec)
        try:
            self.read_cri_times(sample)
        finally:
            self.delete(sample)
        return sample

    def warm_up(self, runtime: Runtime) -> list[StartSample]:
        """Starts excluded from the statistics: images, binaries and caches get warm."""
        return [self.start_and_delete(self.spec(runtime, "warmup"))
                for _ in range(self.options.warmup)]

    def burst(self, spec: PodSpec, count: int) -> tuple[list[StartSample], float | None]:
        """``count`` pods started at once, one thread each; the pods stay up.

        Returns the samples and the wall time from the release of the threads to the last
        first-exec output (None when no pod started).
        """
        gate = threading.Barrier(count)
        samples: list[StartSample | None] = [None] * count

        def one(i: int) -> None:
            try:
                gate.wait(timeout=TIMEOUTS.pod_start)
            except threading.BrokenBarrierError:
                pass
            samples[i] = self.start(spec)

        threads = [threading.Thread(target=one, args=(i,), name=f"burst-{i}", daemon=True)
                   for i in range(count)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUTS.pod_start + TIMEOUTS.exec + 30)
        done = [s if s is not None else StartSample(runtime=spec.runtime.name,
                                                     error="start thread did not finish")
                for s in samples]
        began = [s.began for s in done if s.began is not None]
        ended = [s.ended for s in done if s.ok and s.ended is not None]
        wall = max(ended) - min(began) if began and ended else None
        return done, wall

    @staticmethod
    def phase_metric(phase: str) -> str:
        """startup_<phase>_seconds for a backend phase named ``runp_seconds`` or ``runp``."""
        return f"startup_{phase.removesuffix('_seconds')}_seconds"

    @staticmethod
    def check_failures(what: str, attempts: int, errors: list[str]) -> None:
        """Fail when more than FAILED_START_LIMIT of the attempts failed, with the errors."""
        if attempts and len(errors) / attempts > FAILED_START_LIMIT:
            shown = "\n".join(f"  - {e}" for e in errors[:10])
            pytest.fail(f"{what}: {len(errors)} of {attempts} starts failed (more than "
                        f"{FAILED_START_LIMIT:.0%}):\n{shown}", pytrace=False)

    @classmethod
    def check_failed_starts(cls, what: str, samples: Iterable[StartSample]) -> None:
        samples = list(samples)
        cls.check_failures(what, len(samples), [s.error for s in samples if not s.ok])

    def close(self) -> None:
        with self._lock:
            left, self._live = self._live, []
        for pod in reversed(left):
            self.backend.delete_pod(pod)


_COMMAND_FAILED = re.compile(r"^(\S+ \S+).*? failed \((-?\d+)\)")


def _one_line(exc: BaseException) -> str:
    """The cause of a failed start in one line: the failing command and the runtime's
    ``rpc error ...`` when the text has one (crictl prints warnings before it)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    cause = next((line[line.index("rpc error"):].rstrip('"') for line in lines
                  if "rpc error" in line), None)
    command = _COMMAND_FAILED.match(lines[0])
    if cause and command:
        return f"{command.group(1)} failed ({command.group(2)}): {cause}"[:800]
    return (cause or " ".join(lines[0].split()))[:800]


def concurrent_runs() -> list[str]:
    """Other sandcheck runs alive on this machine (their work dirs name a live owner)."""
    found = []
    try:
        workdirs = [p for p in WORK_BASE.iterdir() if p.is_dir()]
    except OSError:
        return []
    for workdir in sorted(workdirs):
        try:
            pid = int((workdir / OWNER_FILE).read_text().strip())
        except (OSError, ValueError):
            continue
        if pid != os.getpid() and os.path.exists(f"/proc/{pid}"):
            found.append(f"{workdir.name} (pid {pid})")
    return found


_WARNED_KEY = pytest.StashKey[set]()


@pytest.fixture
def bench(runtime: Runtime, backend, perf_options: PerfOptions, request: pytest.FixtureRequest,
          evidence, progress):
    require_runtime(runtime, backend)
    others = concurrent_runs()
    if others:
        evidence.add("other sandcheck runs were active on this machine when this benchmark "
                     "began: their load is in these numbers", others)
        warned = request.config.stash.setdefault(_WARNED_KEY, set())
        if not set(others) <= warned:
            warned.update(others)
            progress(f"warning: other sandcheck runs are active on this machine and disturb "
                     f"the numbers: {', '.join(others)}")
    b = Bench(backend, perf_options)
    request.addfinalizer(b.close)
    return b
