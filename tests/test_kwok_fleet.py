"""A simulated fleet certified in two shards at once, one of them killed and resumed, the
two bundles merged: the ways a large fleet's certification survives its size.

One kwok cluster (the local backend's real control plane, 50 simulated nodes whose pods
replay real cells recorded on this machine's node) serves two ``sandcheck certify``
processes through its kubeconfig, with disjoint ``--nodes`` selectors. Shard A is killed
with SIGKILL once some of its checks are journaled, then resumed; shard B runs through.
The resumed shard must end with the verdicts of an uninterrupted one (every simulated
cell of a class replays the same recording, so all its cells agree), and the merged bundle
must verify.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import skip_unless_kwok_runs, started_kwok

from sandcheck.clusters.fleet import close_fleet, start_fleet
from sandcheck.timeouts import TIMEOUTS, wait_until

NODES = 50
RUNTIMES = "runc,crun,runsc"
SHARD = "sandcheck.dev/test-shard"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fleet_cluster():
    skip_unless_kwok_runs()
    backend = started_kwok(NODES, RUNTIMES)
    try:
        # Shards: the first half of the nodes is a, the rest b.
        for i, name in enumerate(sorted(backend.simulated)):
            backend.core.patch_node(name, {"metadata": {"labels": {
                SHARD: "a" if i < NODES // 2 else "b"}}})
        # Record the real cells the simulated pods replay (what `--backend kwok` does at
        # the start of a certification; the shards reach the cluster as `kubeconfig`).
        recording = start_fleet(backend, backend.runtimes,
                                f"kubernetes.io/hostname={sorted(backend.simulated)[0]}", 3)
        close_fleet(backend, recording)
        yield backend
    finally:
        backend.stop()


def _certify(bundle: Path, kubeconfig: Path, shard: str, resume: bool = False
             ) -> subprocess.Popen:
    argv = [sys.executable, "-m", "sandcheck.cli.main", "certify",
            "--resume" if resume else "--bundle", str(bundle),
            "--backend", "kubeconfig", "--kubeconfig", str(kubeconfig), "--runtimes", RUNTIMES,
            "--nodes", f"{SHARD}={shard}", "--node-parallelism", "16"]
    # From the checkout's root: `python -m` finds this checkout's package first.
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=ROOT, start_new_session=True)


def _sandcheck(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sandcheck.cli.main", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=TIMEOUTS.command)


def _finished(proc: subprocess.Popen, what: str) -> str:
    out, _ = proc.communicate(timeout=TIMEOUTS.fleet_run)
    assert proc.returncode in (0, 1), f"{what} exited {proc.returncode}:\n{out[-3000:]}"
    return out


def _verdicts(bundle: Path) -> dict[tuple[str, str], str]:
    cert = json.loads((bundle / "certification.json").read_text())
    return {(c["node"], c["runtime_class"]): c["verdict"] for c in cert["cells"]}


def _journaled(bundle: Path) -> int:
    journal = bundle / "results.journal.jsonl"
    if not journal.is_file():
        return 0
    return sum(1 for line in journal.read_text().splitlines() if '"check"' in line)


@pytest.mark.full
def test_two_shards_one_killed_and_resumed_merge_into_one_verified_bundle(fleet_cluster,
                                                                         tmp_path):
    kubeconfig = fleet_cluster.kubeconfig_path
    a, b, merged = tmp_path / "a", tmp_path / "b", tmp_path / "all"
    shard_a = _certify(a, kubeconfig, "a")
    shard_b = _certify(b, kubeconfig, "b")
    # Kill shard A once a few hundred of its checks are journaled (mid-way through its
    # first suite), the way a node's OOM killer or a cancelled CI job would.
    wait_until(lambda: True if _journaled(a) >= 200 or shard_a.poll() is not None else None,
               TIMEOUTS.fleet_run, "shard a to journal 200 checks",
               interval=TIMEOUTS.slow_poll)
    assert shard_a.poll() is None, "shard a ended before it could be killed"
    os.killpg(shard_a.pid, signal.SIGKILL)
    shard_a.wait(timeout=TIMEOUTS.kill_grace * 4)
    carried = _journaled(a)
    assert not (a / "SHA256SUMS").exists()

    out_b = _finished(shard_b, "shard b")
    out_a = _finished(_certify(a, kubeconfig, "a", resume=True), "shard a resumed")
    assert f"{carried}" in out_a or "carried" in out_a, out_a[-2000:]

    verdicts_a, verdicts_b = _verdicts(a), _verdicts(b)
    assert len(verdicts_a) == len(verdicts_b) == NODES // 2 * 3
    assert not set(n for n, _ in verdicts_a) & set(n for n, _ in verdicts_b)
    # The resumed shard ends as an uninterrupted one: every cell of a class replays one
    # recording, so each class has one verdict, the same in both shards.
    for runtime in RUNTIMES.split(","):
        in_a = {v for (_, r), v in verdicts_a.items() if r == runtime}
        in_b = {v for (_, r), v in verdicts_b.items() if r == runtime}
        assert in_a == in_b and len(in_a) == 1, (runtime, in_a, in_b, out_b[-1500:])
    results_a = json.loads((a / "results.json").read_text())
    results_b = json.loads((b / "results.json").read_text())
    assert len(results_a["checks"]) == len(results_b["checks"])
    assert not (a / "results.journal.jsonl").exists()

    for bundle in (a, b):
        check = _sandcheck("verify-bundle", str(bundle))
        assert check.returncode == 0, check.stdout + check.stderr
    merge = _sandcheck("merge-bundles", str(merged), str(a), str(b))
    assert merge.returncode in (0, 1), merge.stdout + merge.stderr
    assert _verdicts(merged) == {**verdicts_a, **verdicts_b}
    check = _sandcheck("verify-bundle", str(merged))
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.full
def test_a_thousand_node_fleet_certifies_every_cell(tmp_path):
    """The performance suite's fleet benchmark at its full size (its figures are in the
    report it writes; the check is that it ran and every cell got a verdict)."""
    skip_unless_kwok_runs()
    report = tmp_path / "report"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "suites/performance/test_fleet_scale.py",
         "--fleet-nodes", "1000", "--node-parallelism", "32", "--api-qps", "200",
         "--api-burst", "400", "-p", "no:cacheprovider", "--report-dir", str(report)],
        cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUTS.fleet_run)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    metrics = {m["name"] for m in json.loads((report / "results.json").read_text())["metrics"]}
    assert {"fleet_certify_wall_seconds", "fleet_api_requests_per_cell"} <= metrics
