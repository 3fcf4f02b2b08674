"""Soak: pods of each runtime cycled for a long run, and nothing the run holds on the host
may grow with the number of pods.

Each pod is created, started, exec'd into (``/bin/true``), stopped and removed, at a steady
concurrency, in rounds (``--soak``, ``--soak-concurrency``, ``--soak-sample-every``). After
each round, with none of the soak's pods left, the run's resources are counted: the RSS,
open fds and threads of containerd (and kubelet on the local backend), the shims left and
their RSS and fds, the other processes of the run's cgroups, its mounts, cgroups, pinned
network namespaces, IPAM leases and bridge ports (sandcheck/host/footprint.py). A resource
grew when a fit over every count after a warm-up rises with the pod count
(sandcheck/judges/growth.py); the check fails naming each one, its counts and its fit.
Runs only when asked: a soak takes minutes per runtime.
"""

from __future__ import annotations

import pytest

from sandcheck.clusters.base import Capability
from sandcheck.fixtures.pods import require
from sandcheck.fixtures.soak import run_soak
from sandcheck.fixtures.soakplan import EXAMPLE
from sandcheck.host.footprint import is_count
from sandcheck.judges.growth import MIN_SAMPLES, WARMUP_SAMPLES
from sandcheck.reports.results import Metric


@pytest.mark.performance
def test_soak_leaves_nothing_behind(runtime, bench, backend, soak_plan, record_metric,
                                    evidence, progress):
    if soak_plan is None:
        pytest.skip(f"the soak runs only when asked: give {EXAMPLE}")
    require(backend, Capability.RUN_FOOTPRINT)
    progress(f"soak {runtime.name}: {soak_plan.describe()}")
    run = run_soak(bench, runtime, soak_plan, backend.footprint(), progress)

    trends = run.trends()
    cycles = [c for c in run.cycles if c.sample.error != "soak stopped"]
    failures = sum(not c.sample.ok for c in cycles)
    record_metric(Metric(name="soak_cycle_seconds", runtime=runtime.name, unit="seconds",
                         samples=[c.seconds for c in cycles if c.sample.ok],
                         failures=failures, labels={"pods": str(len(cycles))}))
    evidence.add(f"{runtime.name}: the run's resources after each round of a soak of "
                 f"{len(cycles)} pods ({soak_plan.describe()}); the first count is before "
                 f"any pod, the next {WARMUP_SAMPLES} are the warm-up, left out of the fits",
                 [t.sentence("" if is_count(t.resource) else "bytes") for t in trends],
                 soak=run.as_evidence(), unsettled_counts=run.unsettled)
    for c in cycles:
        if not c.sample.ok:
            evidence.add("failed cycle", c.sample.detail or c.sample.error)
    bench.check_failed_starts(f"{runtime.name} soak", [c.sample for c in cycles])
    judged = [t for t in trends if t.judged]
    assert judged, (f"the soak counted {len(run.readings)} times: a fit needs "
                    f"{1 + WARMUP_SAMPLES + MIN_SAMPLES}; give more pods or a longer --soak, "
                    "or a smaller --soak-sample-every")
    grew = [t for t in judged if t.grew]
    assert not grew, (f"{runtime.name}: what the run holds grew with the pods cycled: "
                      + "; ".join(t.sentence("" if is_count(t.resource) else "bytes")
                                  for t in grew))
