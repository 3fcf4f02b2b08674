"""Startup latency per runtime: pods started one after another, then a burst started at once.

Each start is create pod (the backend times its phases: runp/create/start over CRI on the
node backend, the engine's create/start calls on the docker backend, on Kubernetes the
create call to the container's start by containerd's clock, with the watch-observed
scheduling and Running beside it) plus the first exec output (``/bin/true``, timed here);
the pod is deleted before the next one starts. Warm-up starts come first and are left out
of the numbers. Each runtime's start is set against runc's twice: the headline figure and
containerd's own sandbox-to-container start of the same pods, whose differences to runc's
must agree when the figure shows the runtime.
"""

from __future__ import annotations

import statistics

import pytest

from sandcheck.fixtures.plugin import results_of
from sandcheck.reports.results import Metric
from sandcheck.reports.startcompare import compare_starts


def _seconds(name: str, runtime: str, values, failures: int = 0, **labels: str) -> Metric:
    return Metric(name=name, runtime=runtime, unit="seconds",
                  samples=[v for v in values if v is not None], failures=failures,
                  labels=dict(labels))


def _p50(values) -> str:
    values = [v for v in values if v is not None]
    return f"{statistics.median(values):.3f}s" if values else "n/a"


@pytest.mark.performance
def test_startup_sequential(runtime, bench, perf_options, record_metric, evidence, progress,
                            request):
    warm = bench.warm_up(runtime)
    samples = [bench.start_and_delete(bench.spec(runtime, "seq"))
               for _ in range(perf_options.runs)]
    ok = [s for s in samples if s.ok]
    failures = len(samples) - len(ok)

    phases: dict[str, list[float]] = {}
    for s in ok:
        for phase, value in s.phases.items():
            phases.setdefault(phase, []).append(value)
    for phase, values in phases.items():
        record_metric(_seconds(bench.phase_metric(phase), runtime.name, values, failures))
    record_metric(_seconds("startup_first_exec_seconds", runtime.name,
                           [s.first_exec for s in ok], failures))
    totals = [s.total for s in ok]
    record_metric(_seconds("startup_total_seconds", runtime.name, totals, failures))
    # Phases by the runtime's or engine's own clock (CRI status, docker inspect).
    for key in sorted({k for s in ok for k in s.cri}):
        record_metric(_seconds(f"startup_{key}", runtime.name,
                               [s.cri[key] for s in ok if key in s.cri], failures))

    evidence.add(f"{runtime.name}: {len(samples)} sequential starts (ms per phase; "
                 f"{len(warm)} warm-up starts excluded)", [s.row() for s in samples],
                 warmup=[s.row() for s in warm])
    for s in samples:
        if not s.ok:
            evidence.add("failed start", s.detail or s.error)
    breakdown = [f"{p.removesuffix('_seconds')} {_p50(v)}" for p, v in phases.items()]
    breakdown.append(f"first exec {_p50(s.first_exec for s in ok)}")
    progress(f"startup {runtime.name}: {len(ok)}/{len(samples)} started, p50 total "
             f"{_p50(totals)} ({', '.join(breakdown)})")
    for comparison in compare_starts(results_of(request.config)):
        if comparison.runtime == runtime.name:
            evidence.add("the start figure against the CRI-level start of the same pods "
                         "(difference of medians to runc's, same run)", comparison.sentence())
            progress(f"startup {comparison.sentence()}")
    bench.check_failed_starts(f"{runtime.name} sequential starts", samples)


@pytest.mark.performance
def test_startup_burst(runtime, bench, perf_options, record_metric, evidence, progress):
    bench.warm_up(runtime)
    count = perf_options.burst
    samples, wall = bench.burst(bench.spec(runtime, "burst"), count)
    try:
        for s in samples:
            bench.read_cri_times(s)
    finally:
        for s in samples:
            bench.delete(s)
    ok = [s for s in samples if s.ok]
    failures = len(samples) - len(ok)
    pods = str(count)
    totals = [s.total for s in ok]
    record_metric(_seconds("burst_pod_total_seconds", runtime.name, totals, failures,
                           pods=pods))
    record_metric(_seconds("burst_wall_seconds", runtime.name, [wall], failures, pods=pods))

    evidence.add(f"{runtime.name}: {count} pods started at once (ms per phase)",
                 [s.row() for s in samples],
                 wall_ms=None if wall is None else round(wall * 1000, 1))
    for s in samples:
        if not s.ok:
            evidence.add("failed start", s.detail or s.error)
    progress(f"burst {runtime.name}: {len(ok)}/{count} started, wall "
             f"{'n/a' if wall is None else f'{wall:.3f}s'}, p50 pod total {_p50(totals)}")
    bench.check_failed_starts(f"{runtime.name} burst of {count}", samples)
