"""What a fleet certification costs as the fleet grows, on a simulated fleet.

``sandcheck certify`` runs against the kwok backend: the local backend's real API server,
etcd and controllers, with ``--fleet-nodes`` nodes simulated by kwok whose pods replay
the logs of real cells recorded on this machine's node, so the same judging code runs for
every cell. The figures are the run's own: wall time, API requests per cell (ours and
kubectl's, counted where they leave the client), the peak of requests in flight, the 429s
the API server answered, and the peak memory of the API server, etcd, kwok and the
certifying process. No figure is a pass/fail threshold; the check is that every cell got
its verdict.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from sandcheck.reports.results import Metric
from sandcheck.timeouts import TIMEOUTS


def _unavailable() -> str | None:
    from sandcheck.clusters.registry import entry

    return entry("kwok").unavailable()


def test_fleet_certification_cost(request, tmp_path, record_metric, evidence):
    nodes = request.config.getoption("fleet_nodes")
    if not nodes:
        pytest.skip("certifies a simulated fleet only when asked: give --fleet-nodes N "
                    "(e.g. 1000; needs `sandcheck provision --kwok`)")
    why = _unavailable()
    if why:
        pytest.skip(f"the kwok backend cannot run here: {why}")
    runtimes = request.config.getoption("runtimes") or "runc,crun,runsc"
    bundle = tmp_path / "bundle"
    argv = [sys.executable, "-m", "sandcheck.cli.main", "certify", "--bundle", str(bundle),
            "--backend", "kwok", "--kwok-nodes", str(nodes), "--runtimes", runtimes,
            "--node-parallelism", str(request.config.getoption("node_parallelism"))]
    started = time.monotonic()
    run = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUTS.fleet_run)
    wall = time.monotonic() - started
    evidence.add("certify", {"argv": argv, "exit_code": run.returncode,
                             "stdout_tail": run.stdout[-4000:], "stderr_tail": run.stderr[-4000:]})
    results = bundle / "results.json"
    assert results.is_file(), f"certify wrote no results (exit {run.returncode}): " \
                              f"{run.stderr[-2000:]}"
    env = json.loads(results.read_text())["environment"]
    cert = json.loads((bundle / "certification.json").read_text())
    cells = cert["cells"]
    expected = nodes * len(runtimes.split(","))
    verdicts = {c["verdict"] for c in cells}
    evidence.add("cells", {"count": len(cells), "verdicts": sorted(verdicts),
                           "failing": cert.get("failing_cells", [])[:20]})
    flow = (env.get("api_requests") or {}).get("session") or {}
    requests = sum((flow.get("requests") or {}).values())
    memory = env.get("fleet_memory") or {}
    label = {"fleet_nodes": str(nodes), "runtimes": runtimes}
    for name, unit, value in (
            ("fleet_certify_wall_seconds", "s", wall),
            ("fleet_start_seconds", "s", env.get("fleet_start_seconds") or 0.0),
            ("fleet_api_requests_per_cell", "requests", requests / max(1, len(cells))),
            ("fleet_api_peak_in_flight", "requests", flow.get("peak_in_flight") or 0),
            ("fleet_api_throttled_429", "responses", flow.get("throttled_429") or 0),
            ("fleet_api_unrecovered", "requests", flow.get("unrecovered") or 0),
            *((f"fleet_peak_rss_{who.replace('-', '_')}_bytes", "bytes",
               mem.get("peak_rss_bytes") or 0) for who, mem in sorted(memory.items()))):
        record_metric(Metric(name=name, runtime="fleet", unit=unit, samples=[float(value)],
                             labels=dict(label)))
    assert len(cells) == expected, f"{len(cells)} cells have a verdict, {expected} expected"
    assert not flow.get("unrecovered"), f"requests failed for good: {flow}"
