"""A run's cgroups: what a run starts lives in cgroup trees named by the run, so teardown
and ``sandcheck cleanup`` find every process without asking a daemon (which may be dead)
and without matching command lines (which would also hit a user's ``tail -f`` of a run
log, and misses container processes that name nothing).

The names are ``/sandcheck-<backend>-<run id>`` or ``/sandcheck-<run id>`` at the top of
every hierarchy (node: ``sandcheck-node-``, docker and kind: ``sandcheck-docker-``, local's
kubelet: ``sandcheck-<run id>``). The process that puts a daemon into a run's tree marks
the tree as its own (an empty ``owner-<pid>-<start time>`` cgroup), so ``cleanup`` can tell
a live run from a dead one even when its work dir is gone.

Stopping a tree freezes it, so nothing forks while it is killed, SIGKILLs every member,
thaws it, waits for the members to be gone, and then removes the cgroups deepest first.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

from sandcheck.host import proc as hostproc
from sandcheck.host.cgroups import (
    cgroup_hierarchies,
    cgroup_procs,
    make_subtree,
    remove_subtree,
)
from sandcheck.timeouts import TIMEOUTS, WaitTimeout, wait_until, watch_paused

PREFIX = "sandcheck-"
RUN_ID = r"\d{14}-[0-9a-f]{6}"
"""The shape of ``new_run_id()``: cgroups found without a run id given must have it, so a
test's own ``sandcheck-test-*`` cgroup is never mistaken for a dead run."""
_RUN_CGROUP = re.compile(rf"{PREFIX}(?:[a-z]+-)?(?P<run>{RUN_ID})")


def run_cgroup(run_id: str, backend: str | None = None) -> str:
    """The top cgroup of a run (``/sandcheck-node-<run id>``; no backend:
    ``/sandcheck-<run id>``), the same path in every hierarchy."""
    return f"/{PREFIX}{backend + '-' if backend else ''}{run_id}"


def _top_names(hierarchies: list[Path] | None) -> set[str]:
    names: set[str] = set()
    for base in cgroup_hierarchies() if hierarchies is None else hierarchies:
        try:
            names |= {p.name for p in base.iterdir() if p.is_dir() and
                      p.name.startswith(PREFIX)}
        except OSError:
            continue
    return names


def cgroups_of_run(run_id: str, hierarchies: list[Path] | None = None) -> list[str]:
    """Every top cgroup named by ``run_id`` that exists in some hierarchy."""
    own = re.compile(rf"{PREFIX}(?:[a-z]+-)?{re.escape(run_id)}")
    return sorted(f"/{n}" for n in _top_names(hierarchies) if own.fullmatch(n))


def runs_in_cgroups(hierarchies: list[Path] | None = None) -> dict[str, list[str]]:
    """Run id -> its top cgroups, for every run cgroup on this host (live runs too)."""
    runs: dict[str, list[str]] = {}
    for name in sorted(_top_names(hierarchies)):
        found = _RUN_CGROUP.fullmatch(name)
        if found:
            runs.setdefault(found["run"], []).append(f"/{name}")
    return runs


def members(relative: str, hierarchies: list[Path] | None = None) -> list[int]:
    """Every pid in ``relative``'s subtree, in every hierarchy."""
    pids: set[int] = set()
    for base in cgroup_hierarchies() if hierarchies is None else hierarchies:
        top = base / relative.strip("/")
        if not top.is_dir():
            continue
        for directory, _, _ in os.walk(top):
            pids |= cgroup_procs(Path(directory)) or set()
    return sorted(pids)


def _make(relative: str) -> None:
    parts = relative.strip("/").split("/")
    for depth in range(1, len(parts) + 1):
        make_subtree("/".join(parts[:depth]))


def prepare(relative: str) -> list[Path]:
    """Make ``relative`` in every hierarchy and record the calling process as the owner of
    the tree's top cgroup; returns the ``cgroup.procs`` files to write a member into."""
    _make(relative)
    top = relative.strip("/").split("/")[0]
    _make(f"{top}/{OWNER}{os.getpid()}-{_start_time(os.getpid())}")
    return [base / relative.strip("/") / "cgroup.procs" for base in cgroup_hierarchies()]


def join(relative: str, pid: int) -> None:
    """Move ``pid`` (a process that has no children yet) into ``relative`` in every
    hierarchy, making the cgroups as needed; what it starts later is born there."""
    for procs in prepare(relative):
        procs.write_text(str(pid))


def entering(relative: str):
    """A ``preexec_fn`` that moves the child into ``relative`` before it execs, for a
    daemon that starts children at once (dockerd starts containerd): none is born outside
    the tree. The cgroups are made here, in the parent."""
    files = [str(f) for f in prepare(relative)]

    def enter() -> None:
        pid = str(os.getpid())
        for name in files:
            with open(name, "w") as fh:
                fh.write(pid)

    return enter


OWNER = "owner-"


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (a reused pid has another)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def owner_alive(relative: str, hierarchies: list[Path] | None = None) -> bool | None:
    """Whether the process that owns the tree ``relative`` still runs; None when no owner
    is recorded (a tree a daemon made, like dockerd's cgroup parent)."""
    marks = {p.name for base in (cgroup_hierarchies() if hierarchies is None else hierarchies)
             if (base / relative.strip("/")).is_dir()
             for p in (base / relative.strip("/")).glob(f"{OWNER}*")}
    if not marks:
        return None
    for mark in marks:
        pid, _, start = mark.removeprefix(OWNER).partition("-")
        if pid.isdigit() and int(pid) != os.getpid() and _start_time(int(pid)) == start:
            return True
    return False


def _freezer_files(relative: str) -> list[tuple[Path, str, str]]:
    """(file, value to freeze, value to thaw): the v1 freezer where it is mounted, else
    cgroup v2's cgroup.freeze (never both: one freezer is enough, and they interact)."""
    found = []
    for base in cgroup_hierarchies():
        top = base / relative.strip("/")
        if (top / "freezer.state").exists():
            return [(top / "freezer.state", "FROZEN", "THAWED")]
        if (top / "cgroup.freeze").exists():
            found.append((top / "cgroup.freeze", "1", "0"))
    return found[:1]


def _set_frozen(files: list[tuple[Path, str, str]], frozen: bool) -> bool:
    """Freeze or thaw; True once a freeze has taken (bounded: a tree that does not settle
    in TIMEOUTS.freeze is killed unfrozen)."""
    for path, freeze, thaw in files:
        try:
            path.write_text(freeze if frozen else thaw)
        except OSError:
            return False
    if not frozen or not files:
        return bool(files)
    path, freeze, _ = files[0]

    def settled() -> bool | None:
        if path.name == "freezer.state":
            return True if path.read_text().strip() == freeze else None
        events = (path.parent / "cgroup.events").read_text()
        return True if "frozen 1" in events else None
    try:
        return wait_until(settled, TIMEOUTS.freeze, f"{path} to freeze",
                          interval=TIMEOUTS.kill_poll)
    except (WaitTimeout, OSError):
        return False


@watch_paused()  # a removal runs to its end: a dead daemon must not leave it half-done
def kill_tree(relative: str, timeout: float = TIMEOUTS.kill_grace) -> list[str]:
    """SIGKILL every process in ``relative``'s subtree (frozen meanwhile, so none forks
    a child that escapes) and wait until they are gone; lines say what was done."""
    if not relative.strip("/"):
        raise ValueError("refusing to kill a whole cgroup hierarchy")
    me = os.getpid()
    first = [p for p in members(relative) if p != me]
    if not first:
        return []
    freezer = [] if me in members(relative) else _freezer_files(relative)
    _set_frozen(freezer, True)
    try:
        for pid in first:
            _kill(pid)
    finally:
        _set_frozen(freezer, False)

    def gone() -> bool | None:
        living = [p for p in members(relative) if p != me and hostproc.alive(p)]
        for pid in living:  # born between the listing and the freeze
            _kill(pid)
        return True if not living else None
    try:
        wait_until(gone, timeout, f"the processes in {relative} to exit",
                   interval=TIMEOUTS.kill_poll)
    except WaitTimeout:
        left = [p for p in members(relative) if hostproc.alive(p)]
        return [f"killed {len(first)} processes in {relative}; {len(left)} still run: {left}"]
    return [f"killed {len(first)} processes in {relative}"]


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@watch_paused()  # a removal runs to its end: a dead daemon must not leave it half-done
def release(relative: str, timeout: float = TIMEOUTS.kill_grace) -> list[str]:
    """Kill everything in ``relative``'s subtree, then remove its cgroups."""
    return [*kill_tree(relative, timeout), *remove_subtree(relative, timeout=timeout)]
