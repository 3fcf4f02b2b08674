"""Harness overhead: the same CRI calls made by crictl in a tight loop, next to the suite's
own measured pod start, in the same run and interleaved so drift hits both alike.

crictl loop, each call timed on its own: runp, create, start, exec /bin/true, stopp, rmp.
Its start (runp + create + start + exec) is compared with what the suite reports for a
start (the backend's phases + first exec, as in startup_total_seconds) and with the wall
time of the suite's create_pod + exec calls. Pod and container configs are the backend's
own, written to files before the timer starts.
"""

from __future__ import annotations

import statistics

import pytest

from sandcheck.clusters.backends.base import Capability
from sandcheck.fixtures.bench import CRICTL_START_CALLS, crictl_iteration
from sandcheck.fixtures.pods import require
from sandcheck.reports.results import Metric


def _p50(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}s"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a is not None and b else "n/a"


@pytest.mark.performance
def test_harness_overhead(runtime, bench, backend, perf_options, record_metric, evidence,
                          progress):
    require(backend, Capability.CRI_DIRECT)
    node = backend.cri_node()
    bench.warm_up(runtime)
    spec = bench.spec(runtime, "harness")
    crictl_rows, crictl_errors, suite = [], [], []
    for _ in range(perf_options.runs):
        calls, error = crictl_iteration(node, spec)
        crictl_rows.append(calls)
        if error:
            crictl_errors.append(error)
        suite.append(bench.start_and_delete(spec))

    crictl_start = [sum(row[c] for c in CRICTL_START_CALLS) for row in crictl_rows
                    if all(c in row for c in CRICTL_START_CALLS)]
    ok = [s for s in suite if s.ok]
    reported = [s.total for s in ok]
    wall = [s.create_wall + s.first_exec for s in ok]
    suite_failures = len(suite) - len(ok)
    for name, values, failures in (
            ("harness_crictl_start_seconds", crictl_start, len(crictl_errors)),
            ("harness_suite_start_seconds", reported, suite_failures),
            ("harness_suite_wall_seconds", wall, suite_failures)):
        record_metric(Metric(name=name, runtime=runtime.name, unit="seconds", samples=values,
                             failures=failures))

    per_call = {c: round(_p50([r[c] for r in crictl_rows if c in r]) * 1000, 1)
                for c in (*CRICTL_START_CALLS, "stopp", "rmp") if any(c in r for r in crictl_rows)}
    line = (f"{runtime.name}: p50 start to first exec: crictl alone {_fmt(_p50(crictl_start))}, "
            f"suite reported {_fmt(_p50(reported))} "
            f"({_ratio(_p50(reported), _p50(crictl_start))} of crictl), suite wall "
            f"{_fmt(_p50(wall))} ({_ratio(_p50(wall), _p50(crictl_start))} of crictl)")
    evidence.add(line, {"crictl_p50_ms_per_call": per_call,
                        "crictl_ms": [{k: round(v * 1000, 1) for k, v in r.items()}
                                      for r in crictl_rows],
                        "suite_ms": [s.row() for s in suite]})
    for error in crictl_errors:
        evidence.add("failed crictl start", error)
    for s in suite:
        if not s.ok:
            evidence.add("failed suite start", s.detail or s.error)
    progress(f"harness {line}")
    bench.check_failed_starts(f"{runtime.name} suite starts", suite)
    bench.check_failures(f"{runtime.name} crictl starts", len(crictl_rows), crictl_errors)
