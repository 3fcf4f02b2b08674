"""A run's processes are found by its cgroups and its mounts by what they are made of:
names that map to runs, a tree killed whole while its members fork, owners recorded in
the tree, overlays mounted outside the work dir, and ``cleanup --run`` touching one run
only while a run with a live owner is spared."""

from __future__ import annotations

import os
import subprocess
import uuid

import pytest

from sandcheck import cleanup as cleanup_module
from sandcheck.host import proc as hostproc
from sandcheck.host import runcgroups
from sandcheck.host.cgroups import cgroup_hierarchies, make_subtree
from sandcheck.host.mounts import mounts_of, unmount_all
from sandcheck.timeouts import wait_until

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="cgroups and mounts need root")
FORKER = "while :; do sleep 30 & sleep 0.01; done"
"""A shell that forks a child every 10 ms: a tree killed one pid at a time leaks some."""


def _fake_run_id() -> str:
    """A run id of new_run_id()'s shape that no real run has (year 1999)."""
    return f"19990101000000-{uuid.uuid4().hex[:6]}"


def test_overlay_mounts_are_found_by_their_sources_wherever_they_are_mounted():
    info = "\n".join([
        "30 1 0:30 / /elsewhere/rootfs rw - overlay overlay rw,lowerdir=/w/node-1/snap/2/fs:"
        "/w/node-1/snap/1/fs,upperdir=/w/node-1/snap/3/fs,workdir=/w/node-1/snap/3/work",
        "31 1 0:31 / /w/node-1/state/shm rw - tmpfs shm rw",
        "32 1 0:32 / /other/rootfs rw - overlay overlay rw,lowerdir=/w/node-12/snap/1/fs,"
        "upperdir=/w/node-12/snap/2/fs,workdir=/w/node-12/snap/2/work",
        "33 1 0:33 / /other/lower-only rw - overlay overlay ro,lowerdir=/x:/w/node-1/snap/1/fs",
    ])
    assert mounts_of("/w/node-1", info) == [
        "/w/node-1/state/shm", "/elsewhere/rootfs", "/other/lower-only"]


def test_run_cgroups_map_to_their_runs(tmp_path):
    hierarchies = [tmp_path / "memory", tmp_path / "unified"]
    run = _fake_run_id()
    names = [f"sandcheck-node-{run}", f"sandcheck-{run}", "sandcheck-docker-20260101000000-abcdef",
             "sandcheck-test-1a2b3c4d", "k8s.io", f"sandcheck-node-{run}x"]
    for base in hierarchies:
        for name in names[: 4 if base.name == "memory" else 6]:
            (base / name).mkdir(parents=True)
    assert runcgroups.runs_in_cgroups(hierarchies) == {
        run: [f"/sandcheck-{run}", f"/sandcheck-node-{run}"],
        "20260101000000-abcdef": ["/sandcheck-docker-20260101000000-abcdef"]}
    # A run named explicitly is matched exactly, whatever its id looks like.
    assert runcgroups.cgroups_of_run(run, hierarchies) == [
        f"/sandcheck-{run}", f"/sandcheck-node-{run}"]
    assert runcgroups.cgroups_of_run(run[:-1], hierarchies) == [], "another run's prefix"
    assert runcgroups.cgroups_of_run("1a2b3c4d", hierarchies) == ["/sandcheck-test-1a2b3c4d"]


def _in_tree(relative: str, argv: list[str]) -> subprocess.Popen:
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
    runcgroups.join(relative, proc.pid)
    return proc


@root_only
def test_a_tree_is_killed_whole_while_it_forks_and_a_process_outside_lives():
    tree = runcgroups.run_cgroup(_fake_run_id(), "node")
    outside = subprocess.Popen(["sleep", "60"])
    try:
        forkers = [_in_tree(f"{tree}/pods/pod-{i}/c", ["sh", "-c", FORKER]) for i in range(3)]
        wait_until(lambda: True if len(runcgroups.members(tree)) > 12 else None, 10,
                   "the forkers to fork")
        done = runcgroups.release(tree)
        assert done[0].startswith("killed ") and "still run" not in done[0], done
        assert all(not hostproc.alive(p.pid) for p in forkers)
        assert not any((base / tree.strip("/")).exists() for base in cgroup_hierarchies()), done
        assert hostproc.alive(outside.pid), "a process outside the tree was killed"
    finally:
        outside.kill()
        outside.wait()
        runcgroups.release(tree)


@root_only
def test_the_tree_records_its_owner():
    tree = runcgroups.run_cgroup(_fake_run_id(), "node")
    other = runcgroups.run_cgroup(_fake_run_id(), "node")
    owner = subprocess.Popen(["sleep", "60"])
    try:
        make_subtree(other)
        assert runcgroups.owner_alive(other) is None, "no owner recorded"
        child = _in_tree(f"{tree}/containerd", ["sleep", "60"])
        marks = [p.name for p in (cgroup_hierarchies()[0] / tree.strip("/")).glob("owner-*")]
        assert marks and marks[0].startswith(f"owner-{os.getpid()}-")
        make_subtree(f"{other}/owner-{owner.pid}-{runcgroups._start_time(owner.pid)}")
        assert runcgroups.owner_alive(other) is True
        owner.kill()
        owner.wait()
        assert runcgroups.owner_alive(other) is False
        make_subtree(f"{other}/owner-{child.pid}-1")  # a reused pid: another start time
        assert runcgroups.owner_alive(other) is False
    finally:
        owner.kill()
        owner.wait()
        for relative in (tree, other):
            runcgroups.release(relative)


@root_only
def test_cleanup_of_one_run_spares_the_others_and_finds_dead_runs_by_cgroup(tmp_path,
                                                                         monkeypatch):
    """No work dir exists for any of these runs: they are found by their cgroups alone."""
    named, live, dead = (_fake_run_id() for _ in range(3))
    found = runcgroups.runs_in_cgroups
    # Only this test's runs: other runs on this machine are not this test's to clean.
    monkeypatch.setattr(runcgroups, "runs_in_cgroups", lambda: {
        k: v for k, v in found().items() if k in (named, live, dead)})
    owner = subprocess.Popen(["sleep", "60"])
    trees = {run: runcgroups.run_cgroup(run, "node") for run in (named, live, dead)}
    procs = {run: _in_tree(f"{tree}/pods/pod-a/c", ["sleep", "60"])
             for run, tree in trees.items()}
    try:
        for run, pid in ((live, owner.pid), (dead, 2 ** 22 + 7)):
            for base in cgroup_hierarchies():  # replace join()'s mark (this test process)
                for mark in (base / trees[run].strip("/")).glob("owner-*"):
                    mark.rmdir()
            make_subtree(f"{trees[run]}/owner-{pid}-{runcgroups._start_time(pid) or 1}")
        done = cleanup_module.cleanup(base=tmp_path, run=named)
        assert not hostproc.alive(procs[named].pid), done
        assert hostproc.alive(procs[live].pid) and hostproc.alive(procs[dead].pid), done
        assert runcgroups.cgroups_of_run(named) == []

        done = cleanup_module.cleanup(base=tmp_path)
        assert hostproc.alive(procs[live].pid), f"a live run was removed: {done}"
        assert any(line.startswith(f"skip run {live}") for line in done), done
        assert not hostproc.alive(procs[dead].pid), done
        assert runcgroups.cgroups_of_run(dead) == [], done
    finally:
        owner.kill()
        owner.wait()
        for run, tree in trees.items():
            runcgroups.release(tree)
            procs[run].wait()


@root_only
def test_an_overlay_mounted_outside_the_work_dir_is_unmounted_by_its_sources(tmp_path):
    workdir = tmp_path / "node-x"
    dirs = {name: workdir / "snap" / name for name in ("lower", "upper", "work")}
    for d in dirs.values():
        d.mkdir(parents=True)
    target = tmp_path / "elsewhere"
    target.mkdir()
    hostproc.run(["mount", "-t", "overlay", "overlay", "-o",
                  f"lowerdir={dirs['lower']},upperdir={dirs['upper']},workdir={dirs['work']}",
                  str(target)])
    try:
        assert mounts_of(str(workdir)) == [str(target)]
        assert unmount_all(str(workdir)) == [str(target)]
        assert mounts_of(str(workdir)) == [] and not os.path.ismount(target)
    finally:
        if os.path.ismount(target):
            hostproc.run(["umount", "-l", str(target)], check=False)


def test_the_cli_takes_a_run(monkeypatch, capsys):
    from sandcheck.cli import main as cli

    seen = {}
    monkeypatch.setattr(cleanup_module, "cleanup", lambda **kw: seen.update(kw) or ["ok"])
    assert cli.main(["cleanup", "--run", "20260101000000-abcdef", "--dry-run"]) == 0
    assert seen == {"dry_run": True, "force": False, "run": "20260101000000-abcdef"}
    assert capsys.readouterr().out == "ok\n"
