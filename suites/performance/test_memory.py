"""Memory overhead per runtime: what M idle probe pods cost the host, by three methods.

(a) the drop of MemAvailable as each pod starts (page cache dropped before each reading,
    the highest of a few readings): everything a pod costs the host (runtime processes,
    containerd's bookkeeping, kernel objects). One sample per pod; a step during which
    other processes' memory moved is left out, so a busy machine yields fewer samples
    rather than wrong ones. Mapped file pages count as available, so this can read lower
    than PSS;
(b) PSS of the host processes each pod adds (the backend's host_pids: shim, sandbox,
    gofer, a VM's hypervisor; their descendants; the other processes of the pod's
    cgroups): shared pages split among their sharers; the processes the catalog says run
    the workload (gVisor's Sentry, Kata's hypervisor) must be among them;
(c) the pod's memory cgroups (those the runtime reports for it, and those holding only
    this pod's processes): what a kubelet would account to the pod.
Metrics are in bytes; evidence shows MiB.
"""

from __future__ import annotations

import pytest

from sandcheck.clusters.base import TIMEOUTS, Capability
from sandcheck.fixtures.idlepods import (
    DISTURBED_BYTES,
    MEMORY_METRICS,
    against_runc,
    judge_idle_pods,
    measure_idle_pods,
)
from sandcheck.fixtures.plugin import results_of
from sandcheck.fixtures.pods import require
from sandcheck.host.memory import MIB, READ_WINDOW
from sandcheck.reports.results import Metric


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value / MIB:.1f} MiB"


def _round_mib(value: float | None) -> float | None:
    return None if value is None else round(value / MIB, 2)


@pytest.mark.performance
def test_memory_overhead(runtime, bench, backend, perf_options, record_metric, evidence,
                         progress, request):
    require(backend, Capability.HOST_PROCESSES)
    count = perf_options.idle_pods
    run = measure_idle_pods(bench, runtime, count)

    failures = count - len(run.ok)
    labels = {"pods": str(count)}
    for key, values in (("drop", run.drops), ("pss", run.pss), ("cgroup", run.cgroup)):
        record_metric(Metric(name=MEMORY_METRICS[key], runtime=runtime.name, unit="bytes",
                             samples=values, failures=failures, labels=labels))

    median = run.medians()
    evidence.add(
        f"{runtime.name}: MemAvailable while starting {len(run.ok)} idle pods one by one "
        f"({TIMEOUTS.memory_settle:.0f}s settle per pod, then the highest reading over "
        f"{READ_WINDOW}s, "
        f"page cache dropped before each reading, per-CPU free pages added); {run.disturbed} "
        f"step(s) disturbed by other processes moving more than {DISTURBED_BYTES // MIB} MiB, "
        "left out",
        {"steps": [{"drop_mib": round(st.drop / MIB, 2),
                    "other_processes_mib": round(st.others_moved / MIB, 2),
                    "disturbed": st.disturbed} for st in run.steps],
         "median_drop_per_pod_mib": _round_mib(median["drop"]),
         "first_to_last_per_pod_mib": round((run.first - run.last) / len(run.ok) / MIB, 2)
         if run.ok else None,
         "readings_mib": [round(r / MIB, 1) for r in run.readings]},
        note=run.drop_caches_error or "")
    evidence.add(f"{runtime.name}: host processes (PSS) and memory cgroups of each pod "
                 f"(median {_mib(median['pss'])} and {_mib(median['cgroup'])})",
                 [{"pod": name, **m.evidence()} for name, m in run.measured])

    comparison = against_runc(results_of(request.config), runtime.name, median)
    if comparison:
        evidence.add("comparison with runc in this run", comparison)
    noisy = f" ({run.disturbed} of {len(run.steps)} disturbed)" if run.disturbed else ""
    progress(f"memory {runtime.name}: {len(run.ok)}/{count} idle pods, per pod: MemAvailable "
             f"drop {_mib(median['drop'])}{noisy}, PSS {_mib(median['pss'])}, cgroup "
             f"{_mib(median['cgroup'])}" + (f"; {comparison}" if comparison else ""))
    judge_idle_pods(bench, runtime, evidence, "idle pods", run.samples, run.measured, run.left)
