"""Ctrl-C and SIGTERM in the middle of a real suite run leave nothing on the host."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sandcheck.clusters.backends.node import bridge_name
from sandcheck.clusters.host import proc as hostproc
from sandcheck.clusters.host.mounts import mounts_under
from sandcheck.clusters.host.workdir import OWNER_FILE, WORK_BASE, run_id_of

ROOT = Path(__file__).resolve().parent.parent


def _restore_default_signals() -> None:
    # A shell starts background jobs with SIGINT ignored; a user's Ctrl-C is not ignored.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _run_dirs(owner: int) -> set[Path]:
    """Work dirs claimed by process ``owner`` (other runs on the machine are not ours)."""
    base = WORK_BASE
    if not base.is_dir():
        return set()
    found = set()
    for p in base.iterdir():
        try:
            if int((p / OWNER_FILE).read_text().strip()) == owner:
                found.add(p)
        except (OSError, ValueError):
            continue
    return found


def _pods_started(backend: str, new: set[Path]) -> Path | None:
    """The run's work dir once it has at least two pods running."""
    for workdir in new:
        pods = workdir / ("pods" if backend == "node" else "kubelet/pods")
        if workdir.name.startswith(f"{backend}-") and pods.is_dir() and \
                len(list(pods.iterdir())) >= 2:
            return workdir
    return None


@pytest.mark.integration
@pytest.mark.parametrize("backend,sig", [("node", signal.SIGINT), ("node", signal.SIGTERM),
                                         ("local", signal.SIGINT)],
                         ids=["node-SIGINT", "node-SIGTERM", "local-SIGINT"])
def test_interrupted_run_leaves_nothing(tmp_path, backend, sig):
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "suites/isolation", "-q", "-p", "no:cacheprovider",
         "--backend", backend, "--runtimes", "runc,runsc",
         "--report-dir", str(tmp_path / "report")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=_restore_default_signals,
    )
    try:
        deadline = time.monotonic() + 120
        workdir = None
        while time.monotonic() < deadline and proc.poll() is None:
            workdir = _pods_started(backend, _run_dirs(proc.pid))
            if workdir is not None:
                break
            time.sleep(0.1)
        assert workdir is not None, "the suite never started pods"
        run_dirs = _run_dirs(proc.pid)
        assert hostproc.processes_mentioning(str(workdir)), "no daemon ran for the suite"
        os.kill(proc.pid, sig)
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "KeyboardInterrupt" in out or "Interrupted" in out, out[-2000:]
    for d in run_dirs:  # the local backend's node has a work dir of its own
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and hostproc.processes_mentioning(str(d)):
            time.sleep(0.2)
        left = hostproc.processes_mentioning(str(d))
        assert left == [], f"{left}\n--- the interrupted run said:\n{out[-3000:]}"
        assert mounts_under(str(d)) == []
        assert not d.exists(), f"{d} was left behind"
        bridge = bridge_name(run_id_of(d))
        assert not os.path.exists(f"/sys/class/net/{bridge}"), f"bridge {bridge} was left"
    run_id = run_id_of(workdir)
    assert not list(Path("/sys/fs/cgroup").glob(f"*/sandcheck-{run_id}")), "cgroups were left"
