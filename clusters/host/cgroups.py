"""cgroups of this host: which mode (v1, hybrid, v2) and which controllers where."""

from __future__ import annotations

from pathlib import Path

from sandcheck.clusters.host.mounts import mount_table


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
