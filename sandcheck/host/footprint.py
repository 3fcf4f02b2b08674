"""What a run holds on this host, counted: its daemons' memory, file descriptors and threads,
the shims and other processes in its cgroups, its mounts, cgroups, network namespaces,
IPAM leases and bridge ports. A soak reads it between rounds of pods: a pod that leaks any
of these leaves the count higher after it is gone (sandcheck/judges/growth.py judges that).

A backend says where its run's resources are (``Footprint``); reading them needs nothing
of the backend, only /proc, /sys and the run's directories.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from sandcheck.host import proc as hostproc
from sandcheck.host.cgroups import cgroup_hierarchies
from sandcheck.host.memory import process_name
from sandcheck.host.mounts import below, mount_table
from sandcheck.host.runcgroups import members

SHIM_PREFIX = "containerd-shim"
NETNS_FS = "nsfs"
"""A pinned network namespace is a bind mount of nsfs."""


@dataclass(frozen=True)
class Footprint:
    """Where one run's resources are on this host."""

    daemons: dict[str, int] = field(default_factory=dict)
    """Name -> pid of each daemon the run started that pods pass through (containerd,
    kubelet): their RSS, open fds and threads are read."""
    cgroups: tuple[str, ...] = ()
    """The run's cgroup trees (relative, the same in every hierarchy): the shims and every
    other process of the run are their members, and their directories are counted."""
    mount_prefixes: tuple[str, ...] = ()
    """Directories whose mounts are the run's (its work dirs: rootfs, volumes, and the
    network namespaces containerd pins there, which count as ``netns`` too)."""
    ipam_dir: str | None = None
    """host-local IPAM's data dir: one file per address leased to a pod."""
    bridge: str | None = None
    """The run's CNI bridge: one port per pod's veth."""


def _fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def _threads(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return None


def _entries(directory: str | None, skip: tuple[str, ...] = ()) -> int:
    if directory is None:
        return 0
    try:
        return sum(1 for p in Path(directory).rglob("*")
                   if p.is_file() and not p.name.startswith(skip))
    except OSError:
        return 0


def _cgroup_dirs(relative: str) -> int:
    """Directories of ``relative``'s subtree, summed over the hierarchies."""
    total = 0
    for base in cgroup_hierarchies():
        top = base / relative.strip("/")
        if top.is_dir():
            total += sum(1 for _ in os.walk(top))
    return total


def read(footprint: Footprint) -> dict[str, float]:
    """The footprint now, one number per resource: ``<daemon>_rss_bytes``, ``<daemon>_fds``,
    ``<daemon>_threads``; ``shim_processes``, ``shim_rss_bytes``, ``shim_fds``; ``processes``
    (every other process of the run's cgroups), ``mounts`` (entries, stacked ones too),
    ``cgroups``, ``netns``, ``ipam_leases``, ``bridge_ports``. A daemon that is gone reads
    as absent, not as zero."""
    out: dict[str, float] = {}
    for name, pid in footprint.daemons.items():
        rss = (hostproc.memory(pid) or {}).get("rss_bytes")
        fds, threads = _fds(pid), _threads(pid)
        for key, value in (("rss_bytes", rss), ("fds", fds), ("threads", threads)):
            if value is not None:
                out[f"{name}_{key}"] = value
    pids = {pid for tree in footprint.cgroups for pid in members(tree)}
    pids -= set(footprint.daemons.values())
    shims = [p for p in pids if process_name(p).startswith(SHIM_PREFIX)]
    out["shim_processes"] = len(shims)
    out["shim_rss_bytes"] = sum((hostproc.memory(p) or {}).get("rss_bytes", 0) for p in shims)
    out["shim_fds"] = sum(_fds(p) or 0 for p in shims)
    out["processes"] = len(pids) - len(shims)
    mounts = [fstype for point, fstype, _ in mount_table()
              if any(below(point, p) for p in footprint.mount_prefixes)]
    out["mounts"] = len(mounts)
    out["netns"] = mounts.count(NETNS_FS)
    out["cgroups"] = sum(_cgroup_dirs(tree) for tree in footprint.cgroups)
    out["ipam_leases"] = _entries(footprint.ipam_dir, skip=("last_reserved_ip", "lock"))
    try:
        out["bridge_ports"] = (len(os.listdir(f"/sys/class/net/{footprint.bridge}/brif"))
                               if footprint.bridge else 0)
    except OSError:  # the bridge goes with the last pod (CNI leaves it until stop)
        out["bridge_ports"] = 0
    return out


def is_count(resource: str) -> bool:
    """Whether ``resource`` (a key of ``read``) is a count rather than bytes."""
    return not resource.endswith("_bytes")


def is_pool(resource: str) -> bool:
    """Whether ``resource`` is a daemon's pool (its threads: a Go daemon keeps those its
    busiest moment needed) rather than objects each pod adds and removes."""
    return resource.endswith("_threads")
