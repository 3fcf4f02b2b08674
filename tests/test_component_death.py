"""A daemon of the local backend killed from outside in the middle of a suite (as an OOM
kill or a crash would do it) ends the run within a minute, naming the component, and
teardown leaves nothing; a Ctrl-C in the middle of a wait ends the session at once.

Each run is a real suite run in a subprocess against a real local cluster; the kill is
SIGKILL to the component's process, found by its executable among the run's cgroups."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sandcheck.host import proc as hostproc
from sandcheck.host import runcgroups
from sandcheck.host.mounts import mounts_under
from sandcheck.host.workdir import claimed_by, run_id_of
from sandcheck.timeouts import TIMEOUTS, WaitTimeout, wait_until

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.geteuid() != 0, reason="the local backend needs root")]
ENDS_WITHIN = 60.0
"""The issue's bound: from the kill to the end of the run, teardown included."""

SLOW_CHECKS = """
from pathlib import Path

import pytest

from sandcheck.clusters.base import PodSpec


@pytest.mark.parametrize("n", range(4))
def test_long_exec(backend, runtime, n):
    pod = backend.create_pod(PodSpec(runtime=runtime, name_prefix=f"slow{{n}}"))
    Path({mark!r}).touch()
    pod.exec(["sleep", "50"], timeout=55)
"""


def _restore_default_signals() -> None:
    # A shell starts background jobs with SIGINT ignored; a user's Ctrl-C is not ignored.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _run(tmp_path: Path) -> subprocess.Popen:
    """The slow checks in a run of their own; ``tmp_path/exec`` appears as the first exec
    begins."""
    test_file = tmp_path / "test_slow.py"
    test_file.write_text(SLOW_CHECKS.format(mark=str(tmp_path / "exec")))
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", str(test_file), "-p", "no:cacheprovider", "-s",
         "--backend", "local", "--runtimes", "runc", "--report-dir", str(tmp_path / "report"),
         "--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=_restore_default_signals)


def _exe(pid: int) -> str:
    try:
        return os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        return ""


def _component_pid(proc: subprocess.Popen, component: str) -> tuple[int, list[Path], str]:
    """Once the run execs in its first pod: the component's pid, the run's work dirs and
    its run id."""
    def found() -> tuple[int, list[Path], str] | None:
        if proc.poll() is not None:
            raise AssertionError(f"the run ended first:\n{proc.stdout.read()[-3000:]}")
        dirs = sorted(claimed_by(proc.pid))
        local = [d for d in dirs if d.name.startswith("local-")]
        if not local or not (local[0] / "kubelet" / "pods").is_dir() or \
                not list((local[0] / "kubelet" / "pods").iterdir()):
            return None
        run_id = run_id_of(local[0])
        pids = [p for c in runcgroups.cgroups_of_run(run_id) for p in runcgroups.members(c)
                if _exe(p) == component]
        return (pids[0], dirs, run_id) if pids else None
    return wait_until(found, TIMEOUTS.cluster_start, f"the run's {component} and a pod")


def _assert_nothing_left(dirs: list[Path], run_id: str, said: str) -> None:
    for d in dirs:
        try:
            wait_until(lambda d=d: True if not hostproc.processes_naming(d) else None,
                       TIMEOUTS.component_stop, f"the processes of {d} to exit")
        except WaitTimeout:
            pass
        assert hostproc.processes_naming(d) == [], said[-3000:]
        assert mounts_under(str(d)) == [], said[-3000:]
        assert not d.exists(), f"{d} was left behind\n{said[-3000:]}"
    assert runcgroups.cgroups_of_run(run_id) == [], f"cgroups left\n{said[-3000:]}"


@pytest.mark.parametrize("component", ["containerd", "kubelet", "kube-apiserver"])
def test_a_killed_component_ends_the_run_naming_it(tmp_path, component):
    proc = _run(tmp_path)
    try:
        pid, dirs, run_id = _component_pid(proc, component)
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        said, _ = proc.communicate(timeout=TIMEOUTS.cluster_start)
        took = time.monotonic() - killed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    print(f"{component} killed: the run ended {took:.1f}s later")
    message = next((line for line in said.splitlines() if "exited with -9" in line), "")
    print(f"the user saw: {message}")
    assert proc.returncode != 0, said[-3000:]
    assert f"{component} exited with -9" in said or \
        f"{component} (" in message, f"the component is not named:\n{said[-4000:]}"
    assert "a component of the backend died earlier in this run" in said, said[-4000:]
    assert took < ENDS_WITHIN, f"the run took {took:.0f}s after the kill:\n{said[-3000:]}"
    _assert_nothing_left(dirs, run_id, said)


def test_ctrl_c_mid_wait_ends_the_session(tmp_path):
    proc = _run(tmp_path)
    try:
        _, dirs, run_id = _component_pid(proc, "kubelet")
        wait_until(lambda: True if (tmp_path / "exec").exists() else None, TIMEOUTS.pod_start,
                   "the first exec to begin")
        time.sleep(2)  # well inside the first check's 50 s exec
        os.kill(proc.pid, signal.SIGINT)
        interrupted = time.monotonic()
        try:  # a second Ctrl-C, into the teardown the first one began
            said, _ = proc.communicate(timeout=3)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGINT)
            said, _ = proc.communicate(timeout=TIMEOUTS.cluster_start)
        took = time.monotonic() - interrupted
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    print(f"SIGINT: the session ended {took:.1f}s later")
    assert "KeyboardInterrupt" in said, said[-3000:]
    assert took < 3 or "SIGINT during teardown: teardown goes on" in said, said[-3000:]
    assert "slow1" not in said and "test_long_exec[1]" not in said, (
        f"the next check began after Ctrl-C:\n{said[-3000:]}")
    assert took < ENDS_WITHIN, f"the session took {took:.0f}s after SIGINT:\n{said[-3000:]}"
    _assert_nothing_left(dirs, run_id, said)
