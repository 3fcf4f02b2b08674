"""What the upstream suites share: a node that serves their images with nothing pulled from
beyond this machine, and the focus of each run."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

from sandcheck.clusters.base import Backend, Capability, ImageNode, ServingRegistry
from sandcheck.containerd import hosts
from sandcheck.containerd.images import ProbeImage
from sandcheck.errors import ComponentError, UserError
from sandcheck.fixtures.plugin import progress_of
from sandcheck.fixtures.pods import offers, require
from sandcheck.host.files import read_or_empty
from sandcheck.provision.paths import cache_dir
from sandcheck.upstream import criimages, e2e, e2eimages
from sandcheck.upstream.critest import QUICK, critest_binary, focus_regex
from sandcheck.upstream.offline import Served, remote_attempts, serve


@dataclass
class OfflineNode:
    """A node's containerd with an upstream suite's images in place."""

    node: ImageNode | None
    """None: the cluster pulls the suite's images itself (not a cluster sandcheck made)."""
    registry: ServingRegistry | None
    served: Served | None

    def images_evidence(self) -> dict | str:
        if self.served is None:
            return "not put in place by sandcheck: the cluster pulls them as it would"
        return self.served.as_evidence()


def _offline(request: pytest.FixtureRequest, node: ImageNode,
             stand_ins: Iterable[criimages.StandIn], probe: Path,
             agnhost: dict[str, Path] | None = None) -> OfflineNode:
    """Build ``stand_ins``, start the registry the node reaches and put both in place on
    ``node`` (a missing piece skips, naming how to get it)."""
    progress = progress_of(request.config)
    try:
        busybox = criimages.busybox()
        registry = node.serving_registry()
        request.addfinalizer(registry.stop)
        registry.start()
    except UserError as exc:
        pytest.skip(str(exc))
    try:
        archives = criimages.build_all(busybox, probe, cache_dir() / "upstream-images",
                                       stand_ins, agnhost)
        served = serve(node, registry, archives, progress)
    except ComponentError as exc:
        pytest.fail(f"the upstream suite's images could not be put in place: {exc}",
                    pytrace=False)
    return OfflineNode(node, registry, served)


@pytest.fixture(scope="session")
def critest_node(request: pytest.FixtureRequest, backend: Backend,
                 probe_image: ProbeImage) -> OfflineNode:
    # critest makes sandboxes behind any kubelet's back, and kubelet kills those.
    require(backend, Capability.CRI_DIRECT)
    try:
        critest_binary()
    except UserError as exc:
        pytest.skip(str(exc))
    return _offline(request, backend.cri_node(), criimages.STAND_INS,
                    probe_image.probe_binary)


@pytest.fixture(scope="session")
def e2e_node(request: pytest.FixtureRequest, backend: Backend,
             probe_image: ProbeImage) -> OfflineNode:
    """The cluster e2e.test runs against; on a cluster sandcheck made (local, kind), its
    nodes have e2e's images and pull from nowhere but the run's registry."""
    require(backend, Capability.KUBERNETES_API)
    try:
        e2e.e2e_binary()
        e2e.ginkgo_binary()
        agnhost = e2eimages.agnhost() if offers(backend, Capability.NODE_IMAGES) else None
    except UserError as exc:
        pytest.skip(str(exc))
    if agnhost is None:
        return OfflineNode(None, None, None)
    return _offline(request, backend.image_node(), e2eimages.STAND_INS,
                    probe_image.probe_binary, agnhost)


def _focus(request: pytest.FixtureRequest, option: str, check) -> str | None:
    given = request.config.getoption(option)
    if given is not None:
        try:
            check(given)
        except UserError as exc:
            pytest.exit(f"sandcheck: {exc}", returncode=2)
    return given


@pytest.fixture(scope="session")
def critest_focus(request: pytest.FixtureRequest) -> str | None:
    """``--critest-focus``: a ginkgo focus regex or a preset (``preset:ci``). Unset, the whole
    suite when the session runs upstream checks alone, and ``preset:ci`` beside other suites
    (the whole suite takes minutes per runtime)."""
    given = _focus(request, "critest_focus", focus_regex)
    if given is not None:
        return given
    alone = all(item.get_closest_marker("upstream") for item in request.session.items)
    return None if alone else QUICK


@pytest.fixture(scope="session")
def e2e_focus(request: pytest.FixtureRequest) -> str:
    """``--e2e-focus``: a ginkgo focus regex or a preset; unset, ``preset:runtimeclass``."""
    return _focus(request, "e2e_focus", e2e.resolve_focus) or e2e.RUNTIMECLASS


@pytest.fixture
def upstream_outcome(record_check, evidence):
    """Record an upstream run and judge it: every spec's verdict becomes a check of its own,
    the run's evidence is kept, and the calling check fails on a pull that tried to leave
    the machine, a run that did not finish or reported nothing, a failed suite setup, or an
    undeclared failure. ``outcome(suite, run, verdicts, offline, who, timeout,
    runtime=..., **facts)``."""

    def outcome(suite: str, run, verdicts, offline: OfflineNode, who: str, timeout: float,
                runtime: str | None = None, **facts) -> None:
        for v in verdicts:
            spec_evidence = [{"what": f"{suite} spec: {v.spec.name}", "output": v.spec.output}]
            if v.declared:
                spec_evidence.append({"what": "declared deviation", "output": v.declared})
            extra = {} if runtime is None else {"runtime": runtime}
            record_check(v.check_id, v.status, v.message, spec_evidence, v.spec.seconds,
                         **extra)
        counts = Counter(v.status for v in verdicts)
        evidence.add(suite, " ".join(run.argv), exit_code=run.returncode,
                     seconds=round(run.seconds, 1), counts=dict(counts), junit=str(run.report),
                     log=str(run.log), images=offline.images_evidence(), **facts)
        stale = [v.spec.name for v in verdicts if v.stale]
        if stale:
            evidence.add("declared deviations that passed (remove them from the catalog)", stale)
        if run.host_cleanup:
            evidence.add(f"left on the host by {suite}, removed", run.host_cleanup)
        remote: list[str] = []
        routed_beyond: list[str] = []
        if offline.node is not None and offline.registry is not None:
            node = offline.node
            local = frozenset({hosts.endpoint_host(offline.registry.endpoint)})
            routes = node.registry_routes()
            routed_beyond = [f"{name}: {bad}" for name, found in routes.items()
                             for bad in hosts.beyond(found, local)]
            evidence.add("registry host configuration of the nodes' containerd", routes,
                         beyond_this_machine=routed_beyond)
            logs = {f"containerd of {name}": text for name, text in node.pull_logs().items()}
            logs[suite] = read_or_empty(run.log)
            remote = [f"{where}: {line}" for where, text in logs.items()
                      for line in remote_attempts(text, local)]
            evidence.add(f"pull attempts beyond this machine (containerd's and {suite}'s logs)",
                         remote, lines_scanned={where: text.count("\n")
                                                for where, text in logs.items()})

        assert not routed_beyond, ("a node's pulls could reach beyond this machine: "
                                   + "; ".join(routed_beyond))
        assert not remote, "a pull tried to leave this machine: " + "; ".join(remote)
        assert run.returncode is not None, (
            f"{suite} did not finish within {timeout:.0f}s; log tail:\n{run.log_tail()}")
        setup = run.suite_failures()
        assert not setup, f"{suite}'s suite setup failed: " + "; ".join(setup)
        assert verdicts, f"{suite} reported no spec; log tail:\n{run.log_tail()}"
        failed = [v for v in verdicts if v.status == "failed"]
        assert not failed, (f"{len(failed)} {suite} specs failed for {who} that the catalog "
                            "does not declare: " + "; ".join(
                                f"{v.spec.name}: {v.message.splitlines()[0] if v.message else ''}"
                                for v in failed))

    return outcome
