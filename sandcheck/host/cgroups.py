"""cgroups of this host: which mode (v1, hybrid, v2) and which controllers where, and
subtrees a run makes in every hierarchy (and removes again)."""

from __future__ import annotations

import os
from pathlib import Path

from sandcheck.host.mounts import mount_table
from sandcheck.timeouts import TIMEOUTS, WaitTimeout, wait_until, watch_paused


def cgroup_mode(mountinfo: str | None = None) -> str:
    """``v2`` (unified), ``hybrid`` (v1 controllers plus a cgroup2 mount) or ``v1``."""
    mounts = mount_table(mountinfo)
    if any(p == "/sys/fs/cgroup" and t == "cgroup2" for p, t, _ in mounts):
        return "v2"
    has_v1 = any(t == "cgroup" for _, t, _ in mounts)
    has_v2 = any(t == "cgroup2" for _, t, _ in mounts)
    if has_v1 and has_v2:
        return "hybrid"
    return "v1" if has_v1 else ("v2" if has_v2 else "none")


def cgroup2_mount() -> Path | None:
    for point, fstype, _ in mount_table():
        if fstype == "cgroup2":
            return Path(point)
    return None


def cgroup2_controllers() -> list[str]:
    """Controllers bound to the cgroup2 hierarchy (empty when there is none)."""
    mount = cgroup2_mount()
    if mount is None:
        return []
    try:
        return (mount / "cgroup.controllers").read_text().split()
    except OSError:
        return []


def cgroup_hierarchies(mountinfo: str | None = None) -> list[Path]:
    """Mount points of the cgroup hierarchies (v1 controllers and the v2 mount)."""
    return [Path(point) for point, fstype, _ in mount_table(mountinfo)
            if fstype in ("cgroup", "cgroup2")]


def make_subtree(relative: str, hierarchies: list[Path] | None = None) -> list[Path]:
    """mkdir ``relative`` below every hierarchy root. In a v1 cpuset hierarchy a new cgroup
    starts with no CPUs and no memory nodes, so nothing could join it: it gets its
    parent's."""
    made = []
    for base in cgroup_hierarchies() if hierarchies is None else hierarchies:
        path = base / relative.strip("/")
        path.mkdir(exist_ok=True)
        if (base / "cpuset.cpus").exists():
            for name in ("cpuset.cpus", "cpuset.mems"):
                (path / name).write_text((base / name).read_text())
        made.append(path)
    return made


@watch_paused()  # a removal runs to its end: a dead daemon must not leave it half-done
def remove_subtree(relative: str, hierarchies: list[Path] | None = None,
                   timeout: float = TIMEOUTS.kill_grace) -> list[str]:
    """rmdir ``relative`` and every cgroup below it in every hierarchy, deepest first.

    A cgroup refuses rmdir (EBUSY) while a process is still in it, and processes killed
    a moment ago leave their cgroups only once they are reaped, so each tree gets
    ``timeout`` seconds. Lines say what was removed and what could not be."""
    if not relative.strip("/"):
        raise ValueError("refusing to remove a whole cgroup hierarchy")
    done: list[str] = []
    for base in cgroup_hierarchies() if hierarchies is None else hierarchies:
        top = base / relative.strip("/")
        if not top.is_dir():
            continue
        try:
            wait_until(lambda top=top: True if _rmdir_tree(top) else None, timeout,
                       f"cgroup {top} to empty", interval=TIMEOUTS.exit_poll)
            done.append(f"rmdir {top}")
        except WaitTimeout:
            busy = [d for d, _, _ in os.walk(top)]
            done.append(f"cannot rmdir {top}: {len(busy)} cgroups still busy")
    return done


def _rmdir_tree(top: Path) -> bool:
    """One pass of rmdir over ``top``'s tree, deepest first; True once ``top`` is gone."""
    dirs = sorted((Path(d) for d, _, _ in os.walk(top)), key=lambda p: -len(p.parts))
    for d in dirs:
        try:
            d.rmdir()
        except FileNotFoundError:
            continue
        except OSError:
            pass
    return not top.exists()


# ---- the memory controller: where a pod's memory is accounted -------------------------------

CGROUP_ROOT = Path("/sys/fs/cgroup")


def memory_root(root: Path = CGROUP_ROOT) -> tuple[Path, int]:
    """The directory the memory controller's hierarchy is mounted on, and its version:
    ``root/memory`` under v1 and hybrid (where the cgroup2 mount holds no controller),
    else the unified ``root``. Every memory helper below reads through this, so no caller
    assumes a cgroup version."""
    v1 = root / "memory"
    if (v1 / "memory.usage_in_bytes").exists():
        return v1, 1
    return root, 2


def memory_cgroup_dir(relative: str, root: Path = CGROUP_ROOT) -> Path:
    """The directory of a cgroup path (as in /proc/PID/cgroup) in the memory hierarchy."""
    return memory_root(root)[0] / relative.lstrip("/")


def memory_cgroup_of(pid: int, root: Path = CGROUP_ROOT) -> str | None:
    """The memory cgroup of a process (v1: the memory controller's line; v2: the unified
    ``0::`` line), None when the process is gone."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    v1 = memory_root(root)[1] == 1
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if (v1 and "memory" in controllers.split(",")) or (not v1 and controllers == ""):
            return path
    return None


def _read_int(directory: Path, *names: str) -> int | None:
    """The first of ``names`` in ``directory`` that reads as an integer."""
    for name in names:
        try:
            return int((directory / name).read_text())
        except (OSError, ValueError):
            continue
    return None


def memory_usage(directory: Path) -> int | None:
    """Bytes charged to a memory cgroup (v1 memory.usage_in_bytes, v2 memory.current)."""
    return _read_int(directory, "memory.usage_in_bytes", "memory.current")


def memory_limit(directory: Path) -> int | None:
    """A memory cgroup's limit in bytes (v1 memory.limit_in_bytes, v2 memory.max); None
    when unreadable or unlimited (v2 writes ``max``)."""
    return _read_int(directory, "memory.limit_in_bytes", "memory.max")


def memory_stat(directory: Path) -> dict[str, int]:
    """memory.stat as counters (bytes for the size fields; v1 and v2 name them apart:
    rss/cache vs anon/file)."""
    try:
        text = (directory / "memory.stat").read_text()
    except OSError:
        return {}
    pairs = (line.split() for line in text.splitlines())
    return {p[0]: int(p[1]) for p in pairs if len(p) == 2 and p[1].isdigit()}


def cgroup_procs(directory: Path) -> set[int] | None:
    """The pids in one cgroup (not its descendants); None when it is gone."""
    try:
        return {int(p) for p in (directory / "cgroup.procs").read_text().split()}
    except (OSError, ValueError):
        return None


def kubelet_pod_cgroup(uid: str, root: Path = CGROUP_ROOT) -> Path | None:
    """The memory cgroup kubelet made for a pod (cgroupsPerQOS): ``.../pod<uid>`` with the
    cgroupfs driver, ``...-pod<uid with underscores>.slice`` with the systemd driver."""
    base = memory_root(root)[0]
    for pattern in (f"pod{uid}", f"*pod{uid.replace('-', '_')}*"):
        for path in base.rglob(pattern):
            if path.is_dir():
                return path
    return None
