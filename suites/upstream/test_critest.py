"""critest, cri-tools' CRI validation suite, against each runtime handler: every upstream
spec becomes a check of its own (``critest.<spec>``), judged against the runtime's declared
deviations in the catalog; this check fails on an undeclared failure.

Offline: its images are sandcheck's stand-ins, imported or served by a loopback registry
with every registry host of the node's containerd routed there (suites/upstream/conftest.py).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from sandcheck.clusters.catalog import Runtime
from sandcheck.clusters.containerd import hosts
from sandcheck.clusters.timeouts import TIMEOUTS
from sandcheck.clusters.upstream.critest import SUITE, focus_regex, offline_skips, run_critest
from sandcheck.clusters.upstream.offline import remote_attempts
from sandcheck.clusters.upstream.verdicts import judge_all
from sandcheck.fixtures.pods import require_runtime
from sandcheck.reports.results import Metric

pytestmark = pytest.mark.upstream


def _workdir(request: pytest.FixtureRequest, runtime: Runtime) -> Path:
    """critest's JUnit report and log, kept with the run's reports."""
    return Path(request.config.getoption("report_dir")) / SUITE / runtime.name


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def test_critest(runtime, backend, critest_node, critest_focus, record_check, record_metric,
                 evidence, request):
    require_runtime(runtime, backend)
    node = critest_node.node
    workdir = _workdir(request, runtime)
    focus = focus_regex(critest_focus)
    run = run_critest(node.endpoint, runtime.handler, workdir, TIMEOUTS.critest, focus)
    record_metric(Metric("upstream_critest_seconds", runtime.name, "s", [run.seconds],
                         labels={"focus": critest_focus or "all"}))
    declared = runtime.upstream_deviations.get(SUITE, {})
    verdicts = judge_all(run.specs, declared, SUITE, offline_skips(focus))
    for v in verdicts:
        spec_evidence = [{"what": f"critest spec: {v.spec.name}", "output": v.spec.output}]
        if v.declared:
            spec_evidence.append({"what": "declared deviation", "output": v.declared})
        record_check(v.check_id, v.status, v.message, spec_evidence, v.spec.seconds)
    counts = Counter(v.status for v in verdicts)
    stale = [v.spec.name for v in verdicts if v.stale]
    evidence.add("critest", " ".join(run.argv), focus=critest_focus or "the whole suite",
                 exit_code=run.returncode,
                 seconds=round(run.seconds, 1), counts=dict(counts), junit=str(run.report),
                 log=str(run.log), images=critest_node.served.as_evidence())
    if stale:
        evidence.add("declared deviations that passed (remove them from the catalog)", stale)
    if run.host_cleanup:
        evidence.add("left on the host by critest, removed", run.host_cleanup)
    evidence.add("registry host configuration of the node's containerd",
                 hosts.endpoints(node.registry_config_path),
                 beyond_this_machine=hosts.non_loopback(node.registry_config_path))
    remote = [f"{where}: {line}" for where, path in (("containerd", node.containerd_log),
                                                    ("critest", run.log))
              for line in remote_attempts(_read(path))]
    evidence.add("pull attempts beyond this machine (containerd's and critest's logs)", remote)

    assert not remote, "a pull tried to leave this machine: " + "; ".join(remote)
    assert run.returncode is not None, (
        f"critest did not finish within {TIMEOUTS.critest:.0f}s; log tail:\n{run.log_tail()}")
    suite_failures = [s for s in run.specs if s.suite_node and s.status == "failed"]
    assert not suite_failures, "critest's suite setup failed: " + "; ".join(
        f"{s.name}: {s.message}" for s in suite_failures)
    assert verdicts, (f"critest reported no spec (focus {critest_focus!r}); log tail:\n"
                      f"{run.log_tail()}")
    failed = [v for v in verdicts if v.status == "failed"]
    assert not failed, (f"{len(failed)} critest specs failed for {runtime.name} that the "
                        "catalog does not declare: " + "; ".join(
                            f"{v.spec.name}: {v.message.splitlines()[0] if v.message else ''}"
                            for v in failed))
