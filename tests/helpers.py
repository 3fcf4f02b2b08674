"""Helpers several of the project's tests share (imported as ``helpers``: pytest puts
tests/ on the path)."""

from __future__ import annotations

import os

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
