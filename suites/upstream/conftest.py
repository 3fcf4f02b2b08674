"""What the upstream suite shares: a node that serves critest's images with nothing pulled
from beyond this machine, and the focus of the run."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from sandcheck.clusters.backends.base import Backend, Capability, CriNode
from sandcheck.clusters.containerd.images import ProbeImage
from sandcheck.clusters.errors import ComponentError, UserError
from sandcheck.clusters.provision.paths import cache_dir
from sandcheck.clusters.registry.distribution import LoopbackRegistry
from sandcheck.clusters.upstream import criimages
from sandcheck.clusters.upstream.critest import QUICK, critest_binary, focus_regex
from sandcheck.clusters.upstream.offline import Served, serve
from sandcheck.fixtures.plugin import progress_of
from sandcheck.fixtures.pods import require


@dataclass
class CritestNode:
    """The backend's containerd, with critest's images in place."""

    node: CriNode
    registry: LoopbackRegistry
    served: Served


@pytest.fixture(scope="session")
def critest_node(request: pytest.FixtureRequest, backend: Backend, run_id: str,
                 probe_image: ProbeImage) -> CritestNode:
    # critest makes sandboxes behind any kubelet's back, and kubelet kills those.
    require(backend, Capability.CRI_DIRECT)
    try:
        critest_binary()
        busybox = criimages.busybox()
        registry = LoopbackRegistry(run_id, progress=progress_of(request.config))
        request.addfinalizer(registry.stop)
        registry.start()
    except UserError as exc:
        pytest.skip(str(exc))
    node = backend.cri_node()
    try:
        archives = criimages.build_all(busybox, probe_image.probe_binary,
                                       cache_dir() / "critest-images")
        served = serve(node, registry, archives, progress_of(request.config))
    except ComponentError as exc:
        pytest.fail(f"critest's images could not be put in place: {exc}", pytrace=False)
    return CritestNode(node, registry, served)


@pytest.fixture(scope="session")
def critest_focus(request: pytest.FixtureRequest) -> str | None:
    """``--critest-focus``: a ginkgo focus regex or a preset (``preset:ci``). Unset, the whole
    suite when the session runs upstream checks alone, and ``preset:ci`` beside other suites
    (the whole suite takes minutes per runtime)."""
    given = request.config.getoption("critest_focus")
    if given is not None:
        try:
            focus_regex(given)
        except UserError as exc:
            pytest.exit(f"sandcheck: {exc}", returncode=2)
        return given
    alone = all(item.get_closest_marker("upstream") for item in request.session.items)
    return None if alone else QUICK
