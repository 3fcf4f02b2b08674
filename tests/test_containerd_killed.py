"""A node run's pods are found without containerd: the suite runs in a subprocess with its
work base in a temp dir, and its private containerd is killed under it (teardown must
still stop every pod and spare a user's `tail -f` of the containerd log), or killed
together with the suite (``sandcheck cleanup --run`` must remove everything), or the
run is kept with pods running (``--keep-cluster``) and cleaned with ``--run``.

"Nothing left" is checked by what the run was seen to own: every pid in its cgroup tree,
the tree itself, mounts at or made from its work dir, the work dir, its bridge."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from sandcheck.clusters.nodenet import bridge_name
from sandcheck.host import proc as hostproc
from sandcheck.host import runcgroups
from sandcheck.host.cgroups import cgroup_hierarchies
from sandcheck.host.mounts import mounts_of
from sandcheck.host.workdir import claimed_by, run_id_of
from sandcheck.timeouts import TIMEOUTS, wait_until

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.geteuid() != 0, reason="the node backend needs root")]
KEPT_PODS = """
from sandcheck.clusters.base import PodSpec


def test_leave_pods_running(backend, runtime):
    for _ in range(2):
        backend.create_pod(PodSpec(runtime=runtime, name_prefix="kept"))
"""


@pytest.fixture
def work():
    """The runs' work base: short, since containerd's socket paths must stay under 104
    bytes (pytest's tmp_path is too long)."""
    base = Path(tempfile.mkdtemp(prefix="sc-", dir="/tmp"))
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _env(work: Path) -> dict[str, str]:
    return {**os.environ, "SANDCHECK_WORK": str(work), "PYTHONPATH": str(ROOT)}


def _plugin_args() -> list[str]:
    """A test file outside the checkout gets the plugin from the entry point, else -p."""
    autoloaded = any(ep.value == "sandcheck.fixtures.plugin"
                     for ep in entry_points(group="pytest11"))
    return [] if autoloaded else ["-p", "sandcheck.fixtures.plugin"]


def _suite(work: Path, report: Path, *args: str, backend: str = "node") -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", *args, "-q", "-p", "no:cacheprovider",
         "--backend", backend, "--runtimes", "runc,runsc", "--report-dir", str(report)],
        cwd=ROOT, env=_env(work), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _running_pods(tree: str) -> list[str]:
    """The pod cgroups of ``tree`` that hold a process."""
    pods = cgroup_hierarchies()[0] / tree.strip("/") / "pods"
    found = pods.glob("pod-*") if pods.is_dir() else ()
    return [p.name for p in found if runcgroups.members(f"{tree}/pods/{p.name}")]


def _wait_for_pods(proc: subprocess.Popen, work: Path, count: int = 2) -> tuple[Path, str]:
    """The suite's node work dir and cgroup tree once ``count`` pods run in it."""
    def started() -> tuple[Path, str] | None:
        if proc.poll() is not None:
            raise AssertionError(f"the suite ended before it started pods:\n"
                                 f"{proc.stdout.read()[-3000:]}")
        for workdir in claimed_by(proc.pid, work):
            tree = runcgroups.run_cgroup(run_id_of(workdir), "node")
            if workdir.name.startswith("node-") and len(_running_pods(tree)) >= count:
                return workdir, tree
        return None
    return wait_until(started, TIMEOUTS.cluster_start, "the suite to start pods")


def _containerd_pid(tree: str) -> int:
    def exe(pid: int) -> str:
        try:
            return os.path.basename(os.readlink(f"/proc/{pid}/exe"))
        except OSError:
            return ""
    pids = [p for p in runcgroups.members(f"{tree}/containerd") if exe(p) == "containerd"]
    assert len(pids) == 1, pids
    return pids[0]


def _assert_nothing_left(workdir: Path, pids: list[int], said: str) -> None:
    run_id = run_id_of(workdir)
    left = [p for p in pids if hostproc.alive(p)]
    assert left == [], f"processes left: {left}\n{said[-3000:]}"
    assert runcgroups.cgroups_of_run(run_id) == [], f"cgroups left\n{said[-3000:]}"
    assert mounts_of(str(workdir)) == [], said[-3000:]
    assert not workdir.exists(), f"{workdir} was left\n{said[-3000:]}"
    assert not Path("/sys/class/net", bridge_name(run_id)).exists(), "the bridge was left"


def _cleanup_run(work: Path, run_id: str) -> tuple[str, float]:
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "sandcheck.cli.main", "cleanup", "--run",
                           run_id], cwd=ROOT, env=_env(work), capture_output=True, text=True,
                          timeout=TIMEOUTS.cluster_start)
    assert done.returncode == 0, done.stderr
    return done.stdout, time.monotonic() - start


def _stop(proc: subprocess.Popen, *others: subprocess.Popen) -> None:
    for p in (proc, *others):
        if p.poll() is None:
            p.kill()
        p.wait()


def test_teardown_after_containerd_died_leaves_nothing_and_spares_a_log_reader(tmp_path, work):
    proc = _suite(work, tmp_path / "report", "suites/isolation", "-x")
    tail = None
    try:
        workdir, tree = _wait_for_pods(proc, work)
        tail = subprocess.Popen(["tail", "-f", str(workdir / "containerd" / "containerd.log")],
                                stdout=subprocess.DEVNULL)
        pids = runcgroups.members(tree)
        os.kill(_containerd_pid(tree), signal.SIGKILL)
        out, _ = proc.communicate(timeout=TIMEOUTS.cluster_start)
        assert hostproc.alive(tail.pid), "teardown stopped a user's tail -f of a run log"
        _assert_nothing_left(workdir, pids, out)
    finally:
        _stop(proc, *([tail] if tail else []))


def test_suite_and_containerd_killed_then_cleanup_run_leaves_nothing(tmp_path, work):
    proc = _suite(work, tmp_path / "report", "suites/isolation")
    try:
        workdir, tree = _wait_for_pods(proc, work)
        pids = runcgroups.members(tree)
        containerd = _containerd_pid(tree)
        os.kill(proc.pid, signal.SIGKILL)
        os.kill(containerd, signal.SIGKILL)
        said = proc.communicate(timeout=TIMEOUTS.kill_grace)[0]
    finally:
        _stop(proc)
    orphans = [p for p in runcgroups.members(f"{tree}/pods") if hostproc.alive(p)]
    assert orphans, "no pod outlived its run: nothing for cleanup to prove"
    out, seconds = _cleanup_run(work, run_id_of(workdir))
    _assert_nothing_left(workdir, pids, said + out)
    print(f"cleanup --run: {len(orphans)} orphaned pod processes in {seconds:.1f}s")


def _probe_processes(pids: list[int]) -> list[int]:
    def cmdline(pid: int) -> bytes:
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return b""
    return [p for p in pids if cmdline(p).startswith(b"/probe\0sleep")]


@pytest.mark.parametrize("backend_name", ["node", "local"])
def test_kept_run_with_running_pods_is_cleaned_by_run(tmp_path, work, backend_name):
    """The issue saw a kept local cluster take over two minutes and leave 66 cgroups."""
    test_file = tmp_path / "test_kept.py"
    test_file.write_text(KEPT_PODS)
    proc = _suite(work, tmp_path / "report", str(test_file), "--keep-cluster",
                  *_plugin_args(), backend=backend_name)
    try:
        said = proc.communicate(timeout=TIMEOUTS.cluster_start)[0]
    finally:
        _stop(proc)
    assert proc.returncode == 0, said[-3000:]
    workdirs = sorted(work.iterdir())
    run_id = run_id_of(workdirs[0])
    pids = sorted({p for c in runcgroups.cgroups_of_run(run_id) for p in runcgroups.members(c)})
    # runc's pods show the probe on the host (sandbox and container); runsc's run inside.
    assert len(_probe_processes(pids)) >= 4, said[-3000:]
    out, seconds = _cleanup_run(work, run_id)
    for workdir in workdirs:
        _assert_nothing_left(workdir, pids, said + out)
    assert seconds < TIMEOUTS.component_stop * 3, f"cleanup took {seconds:.0f}s:\n{out}"
    print(f"cleanup --run of a kept {backend_name} run: {len(pids)} processes in "
          f"{seconds:.1f}s")
