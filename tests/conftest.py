"""Fixtures several of the project's tests share (plain helpers are in helpers.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import skip_unless_node_backend

ROOT = Path(__file__).resolve().parent.parent
FULL_REASON = ("part of the fuller run, not of every CI run (.ci/run covers the same ground "
               "more cheaply): run `python3 -m pytest tests --full`")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--full", action="store_true",
                     help="also run the tests marked full (slow duplicates of CI steps)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("full"):
        return
    for item in items:
        if item.get_closest_marker("full"):
            item.add_marker(pytest.mark.skip(reason=FULL_REASON))


def started_node_backend(runtimes: str):
    """The project's node backend with ``runtimes`` (its private containerd, CNI and the
    probe image), started; skips naming what is missing. A generator for module fixtures."""
    skip_unless_node_backend()
    from sandcheck.catalog import Catalog
    from sandcheck.clusters.base import new_run_id
    from sandcheck.clusters.node import NodeBackend
    from sandcheck.fixtures.image import build_probe_image
    from sandcheck.provision.paths import cache_dir

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


@pytest.fixture
def run_suite(tmp_path):
    """run(*pytest args) -> (the finished process, {(check id, runtime): check}): a suite
    of the checkout run as its own pytest process in tmp_path, with a relative report dir
    there (as a user's run has: whatever runs in another directory must not misplace it)."""

    def run(*args: str, timeout: float = 600):
        report = tmp_path / "report"
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("PYTEST_") or k == "PYTEST_DISABLE_PLUGIN_AUTOLOAD"}
        env["PYTHONPATH"] = str(ROOT)
        argv = [str(ROOT / a) if (ROOT / a.split("::")[0]).exists() else a for a in args]
        proc = subprocess.run([sys.executable, "-m", "pytest", *argv, "-p", "no:cacheprovider",
                               "--report-dir", "report", "-q"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=timeout)
        results = report / "results.json"
        checks = {(c["id"], c["runtime"]): c for c in json.loads(results.read_text())["checks"]
                  } if results.is_file() else {}
        return proc, checks

    return run
