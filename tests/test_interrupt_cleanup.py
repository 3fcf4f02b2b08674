"""Ctrl-C and SIGTERM in the middle of a real suite run leave nothing on the host."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clusters import hostproc
from clusters.node import bridge_name

ROOT = Path(__file__).resolve().parent.parent


def _restore_default_signals() -> None:
    # A shell starts background jobs with SIGINT ignored; a user's Ctrl-C is not ignored.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _run_dirs() -> set[Path]:
    base = hostproc.WORK_BASE
    return {p for p in base.iterdir()} if base.is_dir() else set()


@pytest.mark.integration
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_run_leaves_nothing(tmp_path, sig):
    before = _run_dirs()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "suites/isolation", "-q", "-p", "no:cacheprovider",
         "--runtimes", "runc,runsc", "--report-dir", str(tmp_path / "report")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=_restore_default_signals,
    )
    try:
        deadline = time.monotonic() + 120
        pods_dir = None
        while time.monotonic() < deadline and proc.poll() is None:
            new = _run_dirs() - before
            pods = [p / "pods" for p in new if (p / "pods").is_dir()]
            if pods and len(list(pods[0].iterdir())) >= 2:
                pods_dir = pods[0]
                break
            time.sleep(0.1)
        assert pods_dir is not None, "the suite never started pods"
        workdir = pods_dir.parent
        assert hostproc.processes_mentioning(str(workdir)), "no daemon ran for the suite"
        os.kill(proc.pid, sig)
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "KeyboardInterrupt" in out or "Interrupted" in out, out[-2000:]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and hostproc.processes_mentioning(str(workdir)):
        time.sleep(0.2)
    assert hostproc.processes_mentioning(str(workdir)) == []
    assert hostproc.mounts_under(str(workdir)) == []
    assert not workdir.exists(), f"{workdir} was left behind"
    bridge = bridge_name(workdir.name.split("-", 1)[1])
    assert not os.path.exists(f"/sys/class/net/{bridge}"), f"bridge {bridge} was left"
