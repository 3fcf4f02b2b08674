"""Fixtures several of the project's tests share."""

from __future__ import annotations

import os

import pytest


def started_node_backend(runtimes: str):
    """The project's node backend with ``runtimes`` (its private containerd, CNI and the
    probe image), started; skips naming what is missing. A generator for module fixtures."""
    if os.geteuid() != 0:
        pytest.skip("the node backend's private containerd needs root")
    from sandcheck.clusters.backends import registry

    why = registry.entry("node").unavailable()
    if why:
        pytest.skip(f"the node backend cannot run here: {why}")
    from sandcheck.clusters.backends.base import new_run_id
    from sandcheck.clusters.backends.node import NodeBackend
    from sandcheck.clusters.catalog import Catalog
    from sandcheck.clusters.provision.paths import cache_dir
    from sandcheck.fixtures.image import build_probe_image

    image = build_probe_image(cache_dir() / "probe")
    backend = NodeBackend(Catalog.load().select(runtimes), new_run_id(), image)
    try:
        backend.start()
        yield backend
    finally:
        backend.stop()


@pytest.fixture(scope="module")
def runc_node():
    """The node backend with runc."""
    yield from started_node_backend("runc")


@pytest.fixture(scope="module")
def sandbox_node():
    """The node backend with runc and runsc."""
    yield from started_node_backend("runc,runsc")
