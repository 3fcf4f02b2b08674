"""Kubernetes' own e2e specs (the pinned release's e2e.test) against a Kubernetes backend:
the RuntimeClass specs by default, node conformance with ``--e2e-focus preset:node``. Every
spec becomes a check of its own (``e2e.<spec>``); a spec the backend cannot offer by design
is left out and reported skipped with the reason; this check fails on any other failure.

On the local backend nothing is pulled from beyond this machine: e2e's images are built
here, imported, and served by the run's loopback registry (suites/upstream/conftest.py).
Pods the specs make without a RuntimeClass run with the node's default handler: on the
local backend the first of ``--runtimes``, whose name the spec checks carry.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sandcheck.clusters.backends.base import Capability
from sandcheck.clusters.timeouts import TIMEOUTS
from sandcheck.clusters.upstream import e2e
from sandcheck.clusters.upstream.verdicts import judge_all
from sandcheck.fixtures.pods import offers
from sandcheck.reports.results import Metric

pytestmark = [pytest.mark.upstream, pytest.mark.kubernetes]


def test_e2e(backend, e2e_node, e2e_focus, upstream_outcome, record_metric, request):
    focus = e2e.resolve_focus(e2e_focus)
    limits = e2e.limits(backend.name, stand_in_images=e2e_node.node is not None,
                        node_is_host=offers(backend, Capability.NODE_IS_HOST))
    workdir = Path(request.config.getoption("report_dir")) / e2e.SUITE
    run = e2e.run_e2e(backend.kubeconfig_path, workdir, TIMEOUTS.e2e, focus, list(limits))
    # A node sandcheck configures runs pods without a class with the first runtime, whose
    # declared e2e deviations apply.
    default = backend.runtimes[0] if e2e_node.node is not None and backend.runtimes else None
    name = default.name if default is not None else None
    record_metric(Metric("upstream_e2e_seconds", name or backend.name, "s", [run.seconds],
                         labels={"focus": e2e_focus}))
    declared = default.upstream_deviations.get(e2e.SUITE, {}) if default is not None else {}
    verdicts = judge_all(run.specs, declared, e2e.SUITE, limits, focus.regex,
                         skipped_as=f"not run on the {backend.name} backend")
    upstream_outcome(e2e.SUITE, run, verdicts, e2e_node, f"the {backend.name} backend",
                     TIMEOUTS.e2e, runtime=name, focus=e2e_focus,
                     default_handler=default.handler if default is not None else "the cluster's")
