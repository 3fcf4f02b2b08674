"""Kubernetes' own e2e specs (the pinned release's e2e.test) against a Kubernetes backend:
the RuntimeClass specs by default, node conformance with ``--e2e-focus preset:node``. Every
spec becomes a check of its own (``e2e.<spec>``); a spec the backend cannot offer by design
is left out and reported skipped with the reason; this check fails on any other failure.

On clusters sandcheck makes (local, kind) nothing is pulled from beyond this machine:
e2e's images are built here, imported, and served by a registry of the run
(suites/upstream/conftest.py). Pods the specs make without a RuntimeClass run with the
nodes' default handler (local: the first of ``--runtimes``; kind: runc), whose name the
spec checks carry.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sandcheck.clusters.base import Capability
from sandcheck.fixtures.pods import offers
from sandcheck.reports.results import Metric
from sandcheck.timeouts import TIMEOUTS
from sandcheck.upstream import e2e
from sandcheck.upstream.verdicts import judge_all

pytestmark = [pytest.mark.upstream, pytest.mark.kubernetes]


def test_e2e(backend, e2e_node, e2e_focus, upstream_outcome, record_metric, request):
    focus = e2e.resolve_focus(e2e_focus)
    limits = e2e.limits(backend.name, stand_in_images=e2e_node.node is not None,
                        node_is_host=offers(backend, Capability.NODE_IS_HOST))
    workdir = Path(request.config.getoption("report_dir")) / e2e.SUITE
    run = e2e.run_e2e(backend.kubeconfig_path, workdir, TIMEOUTS.e2e, focus, list(limits))
    # Pods without a class run with the nodes' default handler; on nodes sandcheck
    # configured, that handler's runtime is known and its declared e2e deviations apply.
    handler = e2e_node.node.default_handler if e2e_node.node is not None else None
    default = next((rt for rt in backend.runtimes if rt.handler == handler), None)
    name = default.name if default is not None else None
    record_metric(Metric("upstream_e2e_seconds", name or backend.name, "s", [run.seconds],
                         labels={"focus": e2e_focus}))
    declared = default.upstream_deviations.get(e2e.SUITE, {}) if default is not None else {}
    verdicts = judge_all(run.specs, declared, e2e.SUITE, limits, focus.regex,
                         skipped_as=f"not run on the {backend.name} backend")
    upstream_outcome(e2e.SUITE, run, verdicts, e2e_node, f"the {backend.name} backend",
                     TIMEOUTS.e2e, runtime=name, focus=e2e_focus,
                     default_handler=handler or "the cluster's")
