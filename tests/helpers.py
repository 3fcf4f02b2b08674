"""Helpers several of the project's tests share (imported as ``helpers``: pytest puts
tests/ on the path)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def skip_unless_node_backend() -> None:
    """Skip, naming what is missing, unless the node backend can run here."""
    if os.geteuid() != 0:
        pytest.skip("the node backend's private containerd needs root")
    from sandcheck.clusters import registry

    why = registry.entry("node").unavailable()
    if why:
        pytest.skip(f"the node backend cannot run here: {why}")


FAKE_RUNSC = """\
# Claims gVisor's isolation profile (base = "runsc") while its handler runs runc.
[runtimes.fake-runsc]
base = "runsc"
handler = "fake-runsc"
runtime_type = "io.containerd.runc.v2"
options = { BinaryName = "runc" }
binaries = ["runc", "containerd-shim-runc-v2"]
"""
"""An impostor for catalog files (``--catalog``): the security suites must fail it."""


def skip_unless_kwok_runs() -> None:
    from sandcheck.clusters import registry

    if os.geteuid() != 0:
        pytest.skip("the kwok backend's local cluster needs root")
    why = registry.entry("kwok").unavailable()
    if why:
        pytest.skip(f"the kwok backend cannot run here: {why}")


def started_kwok(nodes: int, runtimes: str):
    """The kwok backend up with ``nodes`` simulated nodes (the caller stops it)."""
    from sandcheck.catalog import Catalog
    from sandcheck.clusters.base import new_run_id
    from sandcheck.clusters.kwok.cluster import KwokCluster
    from sandcheck.fixtures.image import build_probe_image
    from sandcheck.provision.paths import cache_dir

    image = build_probe_image(cache_dir() / "probe")
    backend = KwokCluster(Catalog.load().select(runtimes), new_run_id(), image, nodes=nodes,
                          progress=print)
    backend.start()
    return backend


ADMISSION = ("suites/runtimeclass/test_runtimeclass.py::"
             "test_missing_runtime_class_is_rejected_at_admission")


def shard(path: Path, nodes: list[str], selector: str, *, uid: str = "uid-1",
          runtimes: str = "runc,runsc", admission: str = "passed", failing: str = "",
          selection: dict | None = None) -> Path:
    """A certify bundle of ``nodes`` made from made-up results by the writers certify
    uses: two classes per node, one cluster-wide check."""
    from sandcheck.cli import certify
    from sandcheck.reports.bundle import finish_bundle
    from sandcheck.reports.junit import add_testcases
    from sandcheck.reports.render import write_reports
    from sandcheck.reports.results import Check, Results

    checks = []
    for slot, node in enumerate(nodes):
        for rt in runtimes.split(","):
            nodeid = f"suites/isolation/test_isolation.py::test_kernel_identity[{rt}-node{slot}]"
            checks.append(Check(id="isolation.kernel_identity", runtime=rt, node=node,
                                status="failed" if node == failing else "passed",
                                message="AssertionError: boom" if node == failing else "",
                                nodeid=nodeid, duration_seconds=0.25))
    checks.append(Check(id="runtimeclass.missing_runtime_class_is_rejected_at_admission",
                        runtime=None, status=admission, nodeid=ADMISSION))
    env = {"backend": "kubeconfig", "backend_level": "Kubernetes", "kubernetes": "v1.34.12",
           "server": "https://10.0.0.1:6443", "cluster_uid": uid,
           "runtimes_selected": runtimes, "node_selection": selector, "pid": 4242,
           "node_fingerprints": {n: {"kernel": "6.1", "kubelet": "v1.34.12"} for n in nodes},
           "fleet_cells": {f"{n}/{rt}": "running" for n in nodes
                           for rt in runtimes.split(",")},
           "api_requests": {"per_node": 12.0}}
    results = Results(environment=env, checks=checks)
    write_reports(results, path)
    add_testcases(path / "junit.xml", checks, "")
    finish_bundle(path, selection or certify.SELECTION)
    return path
