"""The docker backend: a PodSpec becomes the container it asks for, the isolation suite
passes for runc on a private dockerd, and nothing of a run outlives it: not after a
finished run, not after Ctrl-C in the middle of one, not after a crash (cleanup's steps
for the dead run's work dir)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sandcheck.catalog import BUILTIN
from sandcheck.clusters import registry
from sandcheck.clusters.base import RUN_LABEL, PodSpec
from sandcheck.clusters.docker.engine import (
    ENGINE_FILE,
    bridge_name,
    resolve_host,
    runtime_args,
)
from sandcheck.clusters.docker.pods import (
    cli_create_args,
    create_options,
    engine_phases,
    memory_bytes,
    nano_cpus,
)
from sandcheck.clusters.dockerd.daemon import cgroup_parent_of
from sandcheck.errors import UserError
from sandcheck.host import proc as hostproc
from sandcheck.host.cgroups import cgroup_hierarchies
from sandcheck.host.mounts import mounts_under
from sandcheck.host.workdir import claimed_by, remove_tree, run_id_of
from sandcheck.timeouts import TIMEOUTS, WaitTimeout, wait_until

ROOT = Path(__file__).resolve().parent.parent
needs_dockerd = pytest.mark.skipif(
    shutil.which("dockerd") is None or os.geteuid() != 0,
    reason="needs root and dockerd: run `sandcheck provision --docker`")


# -- the translation, no engine -------------------------------------------------------------

def test_a_pod_spec_becomes_the_container_it_asks_for():
    spec = PodSpec(runtime=BUILTIN["runsc"], seccomp="Unconfined", drop_capabilities=["ALL"],
                   add_capabilities=["NET_ADMIN"], run_as_user=1000,
                   resources={"limits": {"memory": "64Mi", "cpu": "100m"}})
    options = create_options(spec, "r1", "runsc", "sandcheck-r1")
    assert options["entrypoint"] == ["/probe"] and options["command"] == ["sleep"], \
        "the command replaces the image's ENTRYPOINT, as a CRI command does"
    assert options["security_opt"] == ["seccomp=unconfined"]
    assert (options["cap_drop"], options["cap_add"], options["user"]) == (
        ["ALL"], ["NET_ADMIN"], "1000")
    assert (options["mem_limit"], options["nano_cpus"]) == (64 * 2**20, 10**8)
    assert options["labels"][RUN_LABEL] == "r1" and options["network"] == "sandcheck-r1"
    default = create_options(PodSpec(runtime=BUILTIN["runc"]), "r1", "runc", None)
    assert "security_opt" not in default, "Docker's default profile is RuntimeDefault"
    assert default["network"] == "none"
    args = cli_create_args(options, "p1", "sha256:abc")
    assert args[:3] == ["create", "--name", "p1"] and args[-2:] == ["sha256:abc", "sleep"]
    assert "--security-opt=seccomp=unconfined" in args and "--cpus" in args


def test_quantities_and_engine_timestamps():
    assert memory_bytes("1Gi") == 2**30 and memory_bytes("1000") == 1000
    assert nano_cpus("1.5") == 1_500_000_000 and nano_cpus("250m") == 250_000_000
    attrs = {"Created": "2026-11-25T21:00:00.100000000Z",
             "State": {"StartedAt": "2026-11-25T21:00:00.350000000Z"}}
    assert engine_phases(attrs) == {"engine_created_to_started_seconds": 0.25}
    assert engine_phases({"Created": attrs["Created"],
                          "State": {"StartedAt": "0001-01-01T00:00:00Z"}}) == {}


def test_runsc_gets_the_catalogs_flags_and_hosts_are_checked(monkeypatch):
    assert runtime_args(BUILTIN["runsc"]) == ["--platform=systrap", "--oci-seccomp=true"]
    assert runtime_args(BUILTIN["runc"]) == []
    monkeypatch.setenv("DOCKER_HOST", "unix:///tmp/x.sock")
    assert resolve_host("env") == "unix:///tmp/x.sock"
    assert resolve_host(None) is None
    with pytest.raises(UserError, match="engine address"):
        resolve_host("/var/run/docker.sock")
    assert len(bridge_name("20261125214228-3d998f")) <= 15


# -- a real run -----------------------------------------------------------------------------

def _assert_nothing_left(workdir: Path, said: str) -> None:
    """No process, mount, directory, bridge or cgroup of the run; its engine is gone, so
    no container or network of it can be either."""
    run_id = run_id_of(workdir)
    try:
        wait_until(lambda: True if not hostproc.processes_naming(workdir) else None,
                   TIMEOUTS.component_stop, f"the processes of {workdir} to exit")
    except WaitTimeout:
        pass
    assert hostproc.processes_naming(workdir) == [], said[-3000:]
    assert mounts_under(str(workdir)) == []
    assert not workdir.exists(), f"{workdir} was left behind"
    assert not Path("/sys/class/net", bridge_name(run_id)).exists(), "the bridge was left"
    parent = cgroup_parent_of(run_id).strip("/")
    assert [b / parent for b in cgroup_hierarchies() if (b / parent).exists()] == []


def _suite(report: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "suites/isolation", "-q", "-p", "no:cacheprovider",
         "--backend", "docker", "--report-dir", str(report), *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _running_containers(workdir: Path) -> int:
    """Containers of the run in its private engine (0 until the engine answers)."""
    sock = workdir / "engine" / "docker.sock"
    if not sock.exists():
        return 0
    proc = subprocess.run(["docker", "-H", f"unix://{sock}", "ps", "-q", "--filter",
                           f"label={RUN_LABEL}={run_id_of(workdir)}"],
                          capture_output=True, text=True, timeout=TIMEOUTS.api_call)
    return len(proc.stdout.split())


@pytest.mark.integration
@needs_dockerd
def test_isolation_passes_for_runc_and_the_run_leaves_nothing(tmp_path):
    proc = _suite(tmp_path / "report", "--runtimes", "runc")
    seen: set[Path] = set()
    try:
        def finished():
            seen.update(claimed_by(proc.pid))
            return True if proc.poll() is not None else None
        wait_until(finished, TIMEOUTS.cluster_start, "the isolation suite on docker",
                   interval=0.2)
        out = proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out[-3000:]
    assert " passed" in out and "skipped" not in out and "failed" not in out, out[-2000:]
    assert seen, "the run claimed no work dir"
    for workdir in seen:
        _assert_nothing_left(workdir, out)


@pytest.mark.integration
@needs_dockerd
def test_interrupted_run_leaves_nothing(tmp_path):
    proc = _suite(tmp_path / "report", "--runtimes", "runc,runsc")
    try:
        def started() -> Path | None:
            if proc.poll() is not None:
                raise AssertionError(f"the suite ended before it started containers:\n"
                                     f"{proc.stdout.read()[-3000:]}")
            return next((w for w in claimed_by(proc.pid) if w.name.startswith("docker-")
                         and _running_containers(w) >= 2), None)

        workdir = wait_until(started, TIMEOUTS.cluster_start, "the suite to start containers",
                             interval=0.2)
        assert hostproc.processes_naming(workdir), "no dockerd ran for the suite"
        os.kill(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=TIMEOUTS.cluster_start)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "KeyboardInterrupt" in out or "Interrupted" in out, out[-2000:]
    _assert_nothing_left(workdir, out)


@pytest.mark.integration
@needs_dockerd
def test_cleanup_removes_what_a_killed_run_left(tmp_path):
    """SIGKILL leaves the engine, its containers, their cgroups and the bridge; cleanup
    (the generic path plus the docker entry's leftovers) removes them all."""
    proc = _suite(tmp_path / "report", "--runtimes", "runc")
    try:
        workdir = wait_until(
            lambda: next((w for w in claimed_by(proc.pid) if _running_containers(w)), None)
            if proc.poll() is None else None,
            TIMEOUTS.cluster_start, "the suite to start a container", interval=0.2)
        proc.kill()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    proc.stdout.close()
    assert (workdir / ENGINE_FILE).exists()
    assert Path("/sys/class/net", bridge_name(run_id_of(workdir))).exists()
    entry = registry.for_workdir(workdir)
    assert entry is not None and entry.name == "docker"
    # What `sandcheck cleanup` does for one dead work dir (other runs' dirs are not ours).
    hostproc.kill_mentioning(workdir)
    done = entry.remove_leftovers(workdir)
    remove_tree(workdir)
    assert any(line.startswith("ip link delete") for line in done), done
    _assert_nothing_left(workdir, "\n".join(done))


@pytest.mark.integration
@needs_dockerd
def test_private_engine_lives_in_the_runs_cgroup_and_goes_with_it():
    """dockerd, its containerd and every container are born in the run's cgroup tree, so
    stop() ends them by cgroup: a `tail -f` of the engine's log (which names the run's
    work dir) survives."""
    from sandcheck.clusters.base import new_run_id
    from sandcheck.clusters.dockerd.daemon import PrivateDockerd
    from sandcheck.host import runcgroups
    from sandcheck.host.workdir import WORK_BASE

    run_id = new_run_id()
    engine = PrivateDockerd(WORK_BASE / f"docker-{run_id}", run_id)
    tail = None
    try:
        engine.start()
        tail = subprocess.Popen(["tail", "-f", str(engine.log_path)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        members = set(runcgroups.members(engine.cgroup_parent))
        children = {int(p) for p in Path(f"/proc/{engine.proc.pid}/task/{engine.proc.pid}"
                                           "/children").read_text().split()}
        assert engine.proc.pid in members and children <= members, (members, children)
        engine.stop()
        assert runcgroups.members(engine.cgroup_parent) == []
        assert not any((base / engine.cgroup_parent.strip("/")).exists()
                       for base in cgroup_hierarchies())
        assert tail.poll() is None, "teardown stopped a process it did not start"
        assert not engine.workdir.exists()
    finally:
        engine.stop()
        if tail is not None:
            tail.kill()
            tail.wait()
