"""critest, cri-tools' CRI validation suite, against each runtime handler: every upstream
spec becomes a check of its own (``critest.<spec>``), judged against the runtime's declared
deviations in the catalog; this check fails on an undeclared failure.

Offline: its images are sandcheck's stand-ins, imported or served by a registry on 127.0.0.1
with every registry host of the node's containerd routed there (suites/upstream/conftest.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sandcheck.fixtures.pods import require_runtime
from sandcheck.reports.results import Metric
from sandcheck.timeouts import TIMEOUTS
from sandcheck.upstream.critest import OFFLINE_SKIPS, SUITE, focus_regex, run_critest
from sandcheck.upstream.verdicts import judge_all

pytestmark = pytest.mark.upstream


def test_critest(runtime, backend, critest_node, critest_focus, upstream_outcome,
                 record_metric, request):
    require_runtime(runtime, backend)
    node = critest_node.node
    workdir = Path(request.config.getoption("report_dir")) / SUITE / runtime.name
    focus = focus_regex(critest_focus)
    run = run_critest(node.endpoint, runtime.handler, workdir, TIMEOUTS.critest, focus,
                      node.nri_socket)
    record_metric(Metric("upstream_critest_seconds", runtime.name, "s", [run.seconds],
                         labels={"focus": critest_focus or "all"}))
    declared = runtime.upstream_deviations.get(SUITE, {})
    verdicts = judge_all(run.specs, declared, SUITE, OFFLINE_SKIPS, focus)
    upstream_outcome(SUITE, run, verdicts, critest_node, runtime.name, TIMEOUTS.critest,
                     focus=critest_focus or "the whole suite")
