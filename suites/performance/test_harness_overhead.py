"""Harness overhead: the same CRI calls made by crictl in a tight loop, next to the suite's
own measured pod start, in the same run and interleaved so drift hits both alike.

crictl loop, each call timed on its own: runp, create, start, exec /bin/true, stopp, rmp.
Its start (runp + create + start + exec) is compared with what the suite reports for a
start (the backend's phases + first exec, as in startup_total_seconds) and with the wall
time of the suite's create_pod + exec calls. Pod and container configs are the backend's
own, written to files before the timer starts.
"""

from __future__ import annotations

import json
import statistics
import time

import pytest

from sandcheck.clusters.backends.base import TIMEOUTS, unique_name
from sandcheck.reports.results import Metric

START_CALLS = ("runp", "create", "start", "exec")


def _crictl_backend(backend):
    """The node backend whose containerd crictl drives: the backend itself, or the node
    of a local cluster (there the suite's start goes through the API server, scheduler and
    kubelet, and the ratio shows what Kubernetes adds to the same CRI calls)."""
    node = getattr(backend, "node", None) or backend
    daemon = getattr(node, "daemon", None)
    if daemon is None or not all(hasattr(node, a) for a in ("pod_config",
                                                            "container_config")):
        pytest.skip(f"the {backend.name} backend runs no containerd sandcheck can reach with "
                    "crictl: the harness comparison needs --backend node or local")
    return node, daemon


def crictl_iteration(backend, daemon, spec) -> tuple[dict[str, float], str | None]:
    """One pod through crictl alone; returns seconds per call and the error if any."""
    name = unique_name(f"{spec.name_prefix}-crictl")
    pod_dir = backend.workdir / "pods" / name
    (pod_dir / "logs").mkdir(parents=True, exist_ok=True)
    pod_json, ctr_json = pod_dir / "pod.json", pod_dir / "container.json"
    pod_json.write_text(json.dumps(backend.pod_config(spec, name)))
    ctr_json.write_text(json.dumps(backend.container_config(spec)))
    t = TIMEOUTS.pod_start
    calls: dict[str, float] = {}
    sandbox = None

    def timed(call: str, *args: str, timeout: float = t) -> str:
        mark = time.monotonic()
        proc = daemon.crictl(*args, timeout=timeout)
        calls[call] = time.monotonic() - mark
        return proc.stdout.strip()

    try:
        sandbox = timed("runp", "runp", "--runtime", spec.runtime.handler, str(pod_json))
        container = timed("create", "create", sandbox, str(ctr_json), str(pod_json))
        timed("start", "start", container)
        timed("exec", "exec", "-s", "--timeout", str(int(TIMEOUTS.exec)), container,
              "/bin/true", timeout=TIMEOUTS.exec)
        error = None
    except Exception as exc:
        error = " ".join(str(exc).split())[:400]
    finally:
        if sandbox:
            try:
                timed("stopp", "stopp", sandbox, timeout=TIMEOUTS.pod_delete)
                timed("rmp", "rmp", "-f", sandbox, timeout=TIMEOUTS.pod_delete)
            except Exception as exc:
                error = error or " ".join(str(exc).split())[:400]
                daemon.crictl("rmp", "-f", sandbox, timeout=TIMEOUTS.pod_delete, check=False)
    return calls, error


def _p50(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}s"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a is not None and b else "n/a"


@pytest.mark.performance
def test_harness_overhead(runtime, bench, backend, perf_options, record_metric, evidence,
                          progress):
    node, daemon = _crictl_backend(backend)
    bench.warm_up(runtime)
    spec = bench.spec(runtime, "harness")
    crictl_rows, crictl_errors, suite = [], [], []
    for _ in range(perf_options.runs):
        calls, error = crictl_iteration(node, daemon, spec)
        crictl_rows.append(calls)
        if error:
            crictl_errors.append(error)
        suite.append(bench.start_and_delete(spec))

    crictl_start = [sum(row[c] for c in START_CALLS) for row in crictl_rows
                    if all(c in row for c in START_CALLS)]
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
                for c in (*START_CALLS, "stopp", "rmp") if any(c in r for r in crictl_rows)}
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
