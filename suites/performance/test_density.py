"""Density per runtime: idle pods added to one node in cumulative steps (--density-steps),
each step's start latency (p50/p95/p99 of the pods it started) and memory per pod by the
memory benchmark's three methods (MemAvailable drop, PSS of the pods' host processes, the
pods' own cgroups) read with every pod of the step running, and pods per GiB.

It runs only when asked. It fails only for real errors: too many failed starts, pods whose
counted processes lack the runtime's executors, processes of deleted pods still alive. No
figure is compared to a threshold: the report draws Kubernetes' pod start SLO (p99 <= 5 s)
beside the p99s and gives each runtime's ratio to runc at each step.
"""

from __future__ import annotations

import pytest

from sandcheck.clusters.base import Capability
from sandcheck.clusters.registry import MAX_PODS, entry
from sandcheck.fixtures.density import Density, measure_density
from sandcheck.fixtures.idlepods import judge_idle_pods
from sandcheck.fixtures.perfoptions import DENSITY_STEPS_TEXT, DensityOptions
from sandcheck.fixtures.pods import require
from sandcheck.host.memory import MIB
from sandcheck.reports.densityview import CGROUP, DROP, PER_GIB, PSS, START
from sandcheck.reports.results import Metric


@pytest.fixture(scope="session")
def density_options(request: pytest.FixtureRequest) -> DensityOptions:
    """The density options; skips (before any cluster comes up) unless --density-steps."""
    options = DensityOptions.from_config(request.config)
    if not options.steps:
        pytest.skip("the density benchmark runs only when asked: give --density-steps "
                    f"(e.g. --density-steps {DENSITY_STEPS_TEXT}, the same as the option "
                    "alone; --density-memory-budget MiB to stop earlier)")
    return options


def _metrics(runtime: str, density: Density) -> list[Metric]:
    out = []
    for step in density.steps:
        labels = {"step": str(step.target), "pods": str(step.pods)}
        for name, unit, values, failures in (
                (START, "seconds", step.starts, step.failures),
                (PSS, "bytes", step.pss, 0), (CGROUP, "bytes", step.cgroup, 0),
                (DROP, "bytes", [] if density.drop_caches_error or step.drop_per_pod is None
                 else [step.drop_per_pod], 0),
                (PER_GIB, "pods/GiB", [] if density.drop_caches_error or not step.pods_per_gib
                 else [step.pods_per_gib], 0)):
            out.append(Metric(name=name, runtime=runtime, unit=unit, samples=list(values),
                              failures=failures, labels=dict(labels)))
    return out


def _room_message(backend_name: str, density: Density) -> str:
    allocatable, bound = density.room or (0, 0)
    how = (f"raise it with {MAX_PODS.flag} N" if MAX_PODS in entry(backend_name).options
           else "raise the kubelet's maxPods on that node (KubeletConfiguration)")
    return (f"step {density.refused} not run: node {density.node} admits {allocatable} pods "
            f"(allocatable) and holds {bound} already; {how}")


@pytest.mark.performance
def test_density(density_options, runtime, backend, bench, record_metric, evidence, progress):
    require(backend, Capability.HOST_PROCESSES)
    density = measure_density(bench, runtime, density_options,
                              lambda line: progress(f"density {runtime.name}: {line}"))
    for metric in _metrics(runtime.name, density):
        record_metric(metric)

    evidence.add(f"{runtime.name}: idle pods in steps {list(density_options.steps)}, "
                 f"{density_options.parallelism} started at once, memory budget "
                 f"{density.budget // MIB} MiB" + (f", pinned to node {density.node}"
                                                   if density.node else ""),
                 [step.evidence() for step in density.steps], room=density.room,
                 stopped=density.stopped or None, note=density.drop_caches_error or "")
    judge_idle_pods(bench, runtime, evidence, "density", density.samples, density.measured,
                    density.left)
    if density.refused is not None:
        pytest.skip(_room_message(backend.name, density))
