"""Nothing a run makes outlives it: the helpers that stop processes and remove cgroups,
`sandcheck cleanup` on the work dirs of dead runs, and Ctrl-C or SIGTERM in the middle of
a real suite run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from sandcheck import cleanup as cleanup_module
from sandcheck.clusters import registry
from sandcheck.clusters.local.kubelet import cgroup_root
from sandcheck.clusters.nodenet import bridge_name
from sandcheck.host import proc as hostproc
from sandcheck.host import runcgroups
from sandcheck.host.cgroups import cgroup_hierarchies, make_subtree, remove_subtree
from sandcheck.host.mounts import mounts_under
from sandcheck.host.workdir import (
    OWNER_FILE,
    claim,
    claimed_by,
    concurrent_runs,
    run_id_of,
)
from sandcheck.timeouts import TIMEOUTS, WaitTimeout, wait_until

ROOT = Path(__file__).resolve().parent.parent
SLEEPER = "import signal, sys, time\n{setup}\nprint('ready', flush=True)\ntime.sleep(120)\n"


def _sleeper(setup: str = "", *extra: str) -> subprocess.Popen:
    """A python process that has run ``setup`` (e.g. a SIGTERM handler) and then sleeps;
    ``extra`` arguments only show up on its command line."""
    proc = subprocess.Popen([sys.executable, "-c", SLEEPER.format(setup=setup), *extra],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_kill_all_lets_a_process_exit_on_sigterm(tmp_path):
    marker = tmp_path / "terminated"
    proc = _sleeper(f"signal.signal(signal.SIGTERM, lambda *a: (open({str(marker)!r}, 'w')"
                    ".close(), sys.exit(0)))")
    hostproc.kill_all([proc.pid], grace=TIMEOUTS.kill_grace)
    assert not hostproc.alive(proc.pid)
    assert marker.exists(), "the process got no chance to exit on SIGTERM"


def test_kill_all_kills_a_process_that_ignores_sigterm():
    proc = _sleeper("signal.signal(signal.SIGTERM, signal.SIG_IGN)")
    hostproc.kill_all([proc.pid], grace=0.3)
    assert not hostproc.alive(proc.pid)


def test_kill_mentioning_stops_only_processes_naming_the_path(tmp_path):
    ours = _sleeper("", str(tmp_path / "work"))
    other = _sleeper("", str(tmp_path / "work-other"))
    try:
        hostproc.kill_mentioning(tmp_path / "work")
        assert not hostproc.alive(ours.pid)
        assert hostproc.alive(other.pid)
    finally:
        other.kill()
        other.wait()


def test_remove_subtree_goes_deepest_first_and_reports_what_stays(tmp_path):
    base = tmp_path / "hierarchy"
    base.mkdir()
    (base / "cpuset.cpus").write_text("0-1\n")
    (base / "cpuset.mems").write_text("0\n")
    made = make_subtree("/sandcheck-t", [base])
    assert (made[0] / "cpuset.cpus").read_text() == "0-1\n"
    for f in ("cpuset.cpus", "cpuset.mems"):  # a real cgroup's files go with its rmdir
        (made[0] / f).unlink()
    (made[0] / "kubepods" / "burstable").mkdir(parents=True)
    (made[0] / "kubepods" / "busy").mkdir()
    (made[0] / "kubepods" / "busy" / "tasks").write_text("")  # rmdir fails: "busy"
    assert remove_subtree("/sandcheck-t", [base], timeout=0.3) == [
        f"cannot rmdir {made[0]}: 3 cgroups still busy"]
    assert not (made[0] / "kubepods" / "burstable").exists()
    (made[0] / "kubepods" / "busy" / "tasks").unlink()
    assert remove_subtree("/sandcheck-t", [base]) == [f"rmdir {made[0]}"]
    with pytest.raises(ValueError):
        remove_subtree("/", [base])


@pytest.mark.skipif(os.geteuid() != 0, reason="making cgroups needs root")
def test_a_process_can_join_the_subtree_and_its_removal_waits_for_it():
    """In a v1 cpuset hierarchy a new cgroup has no CPUs: joining it fails unless
    make_subtree gave it its parent's. Removal must wait for a killed member to go."""
    rel = f"/sandcheck-test-{uuid.uuid4().hex[:8]}"
    made = make_subtree(rel)
    assert made, "no cgroup hierarchy mounted"
    proc = _sleeper()
    try:
        for cgroup in made:
            (cgroup / "cgroup.procs").write_text(str(proc.pid))
        assert any(line.split(":", 2)[2] == rel for line in
                   Path(f"/proc/{proc.pid}/cgroup").read_text().splitlines())
        assert all(line.startswith("cannot rmdir")
                   for line in remove_subtree(rel, timeout=0.2))
        proc.kill()
        assert remove_subtree(rel) == [f"rmdir {c}" for c in made]
    finally:
        proc.kill()
        proc.wait()
        remove_subtree(rel)


def test_concurrent_runs_names_only_other_live_owners(tmp_path):
    other = _sleeper()
    try:
        for name, pid in (("node-live", other.pid), ("node-self", os.getpid()),
                          ("node-dead", 2 ** 22 + 1)):
            (tmp_path / name).mkdir()
            (tmp_path / name / OWNER_FILE).write_text(str(pid))
        (tmp_path / "node-unclaimed").mkdir()
        assert concurrent_runs(tmp_path) == [f"node-live (pid {other.pid})"]
    finally:
        other.kill()
        other.wait()


def test_cleanup_removes_dead_runs_and_spares_live_ones(tmp_path, monkeypatch):
    handed: list[tuple[str, Path]] = []

    def remove_leftovers(entry: registry.BackendEntry, workdir: Path) -> list[str]:
        handed.append((entry.name, workdir))
        return [f"leftovers of {workdir.name}"]

    monkeypatch.setattr(registry.BackendEntry, "remove_leftovers", remove_leftovers)
    # Only this test's run is looked for by cgroup: other runs on the machine are not ours.
    every_run = runcgroups.runs_in_cgroups
    monkeypatch.setattr(runcgroups, "runs_in_cgroups", lambda *a: {
        k: v for k, v in every_run(*a).items() if k == "dead"})
    dead = tmp_path / "node-dead"
    claim(dead)
    (dead / OWNER_FILE).write_text(str(2 ** 22 + 1))
    (tmp_path / "unknown-x").mkdir()
    live = _sleeper()
    (tmp_path / "local-live").mkdir()
    (tmp_path / "local-live" / OWNER_FILE).write_text(str(live.pid))
    daemon = _sleeper()  # the dead run's daemon: in its run's cgroup, naming nothing
    runcgroups.join(f"{runcgroups.run_cgroup('dead', 'node')}/containerd", daemon.pid)
    reader = _sleeper("", str(dead / "containerd.log"))  # a user's `tail -f` of its log
    try:
        done = cleanup_module.cleanup(base=tmp_path)
        assert not hostproc.alive(daemon.pid), "the dead run's daemon still runs"
        assert hostproc.alive(reader.pid), "cleanup stopped a process the run did not start"
    finally:
        for proc in (live, daemon, reader):
            proc.kill()
            proc.wait()
        runcgroups.release(runcgroups.run_cgroup("dead", "node"))
    assert not dead.exists() and not (tmp_path / "unknown-x").exists()
    assert (tmp_path / "local-live").exists()
    assert handed == [("node", dead)], "each work dir goes to its own backend's remover"
    assert "  leftovers of node-dead" in done
    assert any(line.startswith(f"skip {tmp_path / 'local-live'}") for line in done)
    assert not runcgroups.cgroups_of_run("dead")


# -- a real run, interrupted --------------------------------------------------------------


def _restore_default_signals() -> None:
    # A shell starts background jobs with SIGINT ignored; a user's Ctrl-C is not ignored.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _pods_started(backend: str, new: set[Path]) -> Path | None:
    """The run's work dir once it has at least two pods running."""
    for workdir in new:
        pods = workdir / ("pods" if backend == "node" else "kubelet/pods")
        if workdir.name.startswith(f"{backend}-") and pods.is_dir() and \
                len(list(pods.iterdir())) >= 2:
            return workdir
    return None


@pytest.mark.integration
@pytest.mark.parametrize("backend_name,sig", [("node", signal.SIGINT), ("node", signal.SIGTERM),
                                              ("local", signal.SIGINT)],
                         ids=["node-SIGINT", "node-SIGTERM", "local-SIGINT"])
def test_interrupted_run_leaves_nothing(tmp_path, backend_name, sig):
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "suites/isolation", "-q", "-p", "no:cacheprovider",
         "--backend", backend_name, "--runtimes", "runc,runsc",
         "--report-dir", str(tmp_path / "report")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=_restore_default_signals,
    )
    try:
        def started() -> Path | None:
            if proc.poll() is not None:
                raise AssertionError(f"the suite ended before it started pods:\n"
                                     f"{proc.stdout.read()[-3000:]}")
            return _pods_started(backend_name, claimed_by(proc.pid))

        workdir = wait_until(started, TIMEOUTS.cluster_start, "the suite to start pods")
        run_dirs = claimed_by(proc.pid)
        assert hostproc.processes_naming(workdir), "no daemon ran for the suite"
        os.kill(proc.pid, sig)
        out, _ = proc.communicate(timeout=TIMEOUTS.cluster_start)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "KeyboardInterrupt" in out or "Interrupted" in out, out[-2000:]
    for d in run_dirs:  # the local backend's node has a work dir of its own
        try:
            wait_until(lambda d=d: True if not hostproc.processes_naming(d) else None,
                       TIMEOUTS.component_stop, f"the processes of {d} to exit")
        except WaitTimeout:
            pass
        left = hostproc.processes_naming(d)
        assert left == [], f"{left}\n--- the interrupted run said:\n{out[-3000:]}"
        assert mounts_under(str(d)) == []
        assert not d.exists(), f"{d} was left behind"
        bridge = bridge_name(run_id_of(d))
        assert not os.path.exists(f"/sys/class/net/{bridge}"), f"bridge {bridge} was left"
    root = cgroup_root(run_id_of(workdir)).lstrip("/")
    left = [base / root for base in cgroup_hierarchies() if (base / root).exists()]
    assert left == [], "cgroups were left"
