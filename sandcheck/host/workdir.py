"""Work dirs: everything a run makes on a host lives in one directory per run under
WORK_BASE (``<backend>-<run id>``), with the pid of the process that owns it, so what a
crashed run left can be found and removed."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from sandcheck.host.mounts import unmount_all
from sandcheck.host.proc import kill_mentioning

WORK_BASE = Path(os.environ.get("SANDCHECK_WORK", "/var/tmp/sandcheck"))

OWNER_FILE = "owner.pid"


def claim(workdir: Path) -> None:
    """Mark ``workdir`` as owned by this process, so cleanup leaves it alone while we live."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / OWNER_FILE).write_text(str(os.getpid()))


def owner_pid(workdir: Path) -> int | None:
    """The pid that claimed ``workdir`` (None when unclaimed or unreadable)."""
    try:
        return int((workdir / OWNER_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def owner_alive(workdir: Path) -> bool:
    """Whether another live process owns ``workdir`` (its run is still going)."""
    pid = owner_pid(workdir)
    return pid is not None and pid != os.getpid() and Path(f"/proc/{pid}").exists()


def claimed_by(owner: int, base: Path | None = None) -> set[Path]:
    """The work dirs process ``owner`` claimed (other runs on the machine are not its)."""
    base = WORK_BASE if base is None else base
    if not base.is_dir():
        return set()
    return {p for p in base.iterdir() if p.is_dir() and owner_pid(p) == owner}


def concurrent_runs(base: Path | None = None) -> list[str]:
    """Other sandcheck runs alive on this machine (their work dirs name a live owner),
    as ``<work dir name> (pid N)``: benchmarks record them, since their load is in the
    numbers."""
    base = WORK_BASE if base is None else base
    try:
        workdirs = sorted(p for p in base.iterdir() if p.is_dir())
    except OSError:
        return []
    return [f"{w.name} (pid {owner_pid(w)})" for w in workdirs if owner_alive(w)]


def delete_tree(path: Path) -> None:
    """Unmount everything below ``path`` or made from it, then delete it. Stops nothing:
    a run stops its own processes (by pid and cgroup) before this."""
    unmount_all(str(path))
    if path.exists():
        shutil.rmtree(path, ignore_errors=True)


def remove_tree(path: Path) -> None:
    """Stop the processes that name ``path``, then delete_tree: for daemons started outside
    any run cgroup (a test's own). A run's teardown stops its processes by pid and cgroup."""
    kill_mentioning(path)
    delete_tree(path)


def run_id_of(workdir: Path) -> str:
    """The run id in a work dir's name (``node-<run id>``, ``local-<run id>``)."""
    return workdir.name.split("-", 1)[1] if "-" in workdir.name else workdir.name
