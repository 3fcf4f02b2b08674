"""Harness overhead: the same start made by the backend's own tool alone in a tight loop
(crictl over CRI, the docker CLI on the docker backend), next to the suite's own measured
pod start, in the same run and interleaved so drift hits both alike.

crictl loop, each call timed on its own: runp, create, start, exec /bin/true, stopp, rmp;
docker CLI loop: create, start (together ``docker run -d``), exec /bin/true, rm -f.
Its start (every call up to the exec) is compared with what the suite reports for a
start (the backend's phases + first exec, as in startup_total_seconds) and with the wall
time of the suite's create_pod + exec calls. Pod and container configs are the backend's
own, written before the timer starts. Metric names say which tool the suite is compared
with (``harness_crictl_start_seconds``, ``harness_docker_cli_start_seconds``).
"""

from __future__ import annotations

import statistics

import pytest

from sandcheck.clusters.base import Capability
from sandcheck.fixtures.pods import offers
from sandcheck.fixtures.toolstarts import (
    CRICTL_START_CALLS,
    DOCKER_START_CALLS,
    crictl_iteration,
    docker_iteration,
)
from sandcheck.reports.results import Metric


def _p50(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}s"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a is not None and b else "n/a"


COMPARES = {
    "crictl": "the suite's CRI start against the same CRI calls made by bare crictl on the same "
              "containerd: the harness's own cost (node backend; on Kubernetes backends kubelet "
              "kills sandboxes made behind its back, so there is no such comparison there)",
    "docker_cli": "the suite's Docker-engine start against the same engine calls made by the "
                  "docker CLI alone: the harness's own cost (docker backend)",
}
"""What each comparison measures, printed beside its numbers."""


def _tool_alone(backend):
    """The backend's own tool for a start: (its name, the calls of a start, the calls that
    remove it, one iteration); skips when the backend offers no such tool."""
    if offers(backend, Capability.CRI_DIRECT):
        node = backend.cri_node()
        return "crictl", CRICTL_START_CALLS, ("stopp", "rmp"), \
            lambda spec: crictl_iteration(node, spec)
    if offers(backend, Capability.DOCKER_CLI):
        engine = backend.docker_engine()
        return "docker_cli", DOCKER_START_CALLS, ("rm",), \
            lambda spec: docker_iteration(engine, spec)
    pytest.skip(f"needs {Capability.CRI_DIRECT.gives} or {Capability.DOCKER_CLI.gives}; the "
                f"{backend.name} backend has neither: run with {Capability.CRI_DIRECT.where} "
                f"or {Capability.DOCKER_CLI.where}")


@pytest.mark.performance
def test_harness_overhead(runtime, bench, backend, perf_options, record_metric, evidence,
                          progress):
    tool, start_calls, remove_calls, iteration = _tool_alone(backend)
    shown = tool.replace("_", " ")
    bench.warm_up(runtime)
    spec = bench.spec(runtime, "harness")
    tool_rows, tool_errors, suite = [], [], []
    for _ in range(perf_options.runs):
        calls, error = iteration(spec)
        tool_rows.append(calls)
        if error:
            tool_errors.append(error)
        suite.append(bench.start_and_delete(spec))

    tool_start = [sum(row[c] for c in start_calls) for row in tool_rows
                    if all(c in row for c in start_calls)]
    ok = [s for s in suite if s.ok]
    reported = [s.total for s in ok]
    wall = [s.create_wall + s.first_exec for s in ok]
    suite_failures = len(suite) - len(ok)
    for name, values, failures in (
            (f"harness_{tool}_start_seconds", tool_start, len(tool_errors)),
            ("harness_suite_start_seconds", reported, suite_failures),
            ("harness_suite_wall_seconds", wall, suite_failures)):
        record_metric(Metric(name=name, runtime=runtime.name, unit="seconds", samples=values,
                             failures=failures))

    per_call = {c: round(_p50([r[c] for r in tool_rows if c in r]) * 1000, 1)
                for c in (*start_calls, *remove_calls) if any(c in r for r in tool_rows)}
    line = (f"{runtime.name}: p50 start to first exec: {shown} alone "
            f"{_fmt(_p50(tool_start))}, suite reported {_fmt(_p50(reported))} "
            f"({_ratio(_p50(reported), _p50(tool_start))} of {shown}), suite wall "
            f"{_fmt(_p50(wall))} ({_ratio(_p50(wall), _p50(tool_start))} of {shown})")
    evidence.add(f"what this compares: {COMPARES[tool]}")
    evidence.add(line, {f"{tool}_p50_ms_per_call": per_call,
                        f"{tool}_ms": [{k: round(v * 1000, 1) for k, v in r.items()}
                                       for r in tool_rows],
                        "suite_ms": [s.row() for s in suite]})
    for error in tool_errors:
        evidence.add(f"failed {shown} start", error)
    for s in suite:
        if not s.ok:
            evidence.add("failed suite start", s.detail or s.error)
    progress(f"harness {line}")
    bench.check_failed_starts(f"{runtime.name} suite starts", suite)
    bench.check_failures(f"{runtime.name} {shown} starts", len(tool_rows), tool_errors)
