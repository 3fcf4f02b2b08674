"""A trace's private tracefs instance: where tracefs is, making and removing the instance,
writing its control files, reading its ring buffer's counters, and removing instances a
killed run left behind.

Each trace has its own instance (``instances/sandcheck-<pid>-<random>-<label>``): its
own pid filter, options and ring buffer, so traces running at once (parallel runs, xdist
workers) never see each other's processes and never touch the global buffer. An
instance holds its buffer in kernel memory until it is removed, so the owner's pid in
the name lets a later trace remove one whose owner is gone.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import tempfile
from pathlib import Path

from sandcheck.errors import UserError
from sandcheck.host.files import read_or_empty
from sandcheck.host.mounts import mount_table
from sandcheck.host.proc import run
from sandcheck.timeouts import TIMEOUTS, wait_until

TRACEFS = Path("/sys/kernel/tracing")
INSTANCE_PREFIX = "sandcheck-"
PRIVATE_MOUNT = "sandcheck-tracefs-"
NAME_TRIES = 3
"""Random instance names tried before giving up (one taken is another trace's)."""
REMOVE_TIMEOUT = TIMEOUTS.kill_grace
STATS_FIELDS = {"entries": "entries", "overrun": "overrun",
                "commit overrun": "commit_overrun", "dropped events": "dropped_events",
                "read events": "read_events", "bytes": "bytes"}


# ---- the mount -------------------------------------------------------------------------------

def tracefs_root() -> Path | None:
    """Where tracefs is mounted in this mount namespace (the usual place first). Another
    trace's private mount is not a candidate: it goes when that trace ends."""
    points = [point for point, fstype, _ in mount_table()
              if fstype == "tracefs" and not Path(point).name.startswith(PRIVATE_MOUNT)]
    if str(TRACEFS) in points:
        return TRACEFS
    return Path(points[0]) if points else None


class TracefsMount:
    """The mounted tracefs, or one mounted privately for as long as the trace runs.

    tracefs is one superblock for the whole kernel: every mount shows the same instances.
    When none is mounted, ours goes on a fresh temporary directory and is unmounted at the
    end; /sys/kernel/tracing is never mounted or unmounted, since another run or tool may
    be using it and unmounting it under them would make their files vanish mid-trace. A
    private mount point is only ever removed with rmdir, so a mount that refused to go can
    never lead to deleting instance directories through it."""

    def __init__(self) -> None:
        self.root: Path | None = None
        self.mounted_by_us = False

    def __enter__(self) -> Path:
        found = tracefs_root()
        if found is not None:
            self.root = found
            return found
        point = Path(tempfile.mkdtemp(prefix=PRIVATE_MOUNT))
        proc = run(["mount", "-t", "tracefs", "tracefs", str(point)], check=False)
        if proc.returncode != 0:
            os.rmdir(point)
            raise UserError(f"cannot mount tracefs: {proc.stderr.strip()}; tracing host "
                            "syscalls needs root with CAP_SYS_ADMIN and a kernel with "
                            "tracefs")
        self.root, self.mounted_by_us = point, True
        return point

    def __exit__(self, *exc: object) -> None:
        if not self.mounted_by_us or self.root is None:
            return
        if run(["umount", str(self.root)], check=False).returncode != 0:
            run(["umount", "-l", str(self.root)], check=False)
        try:
            os.rmdir(self.root)
        except OSError:
            pass
        self.mounted_by_us = False


# ---- one instance ----------------------------------------------------------------------------

def _safe_label(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label)[:40] or "trace"


def create_instance(root: Path, label: str) -> Path:
    """A new instance of ours under ``root``, named after this process and ``label``."""
    for _ in range(NAME_TRIES):
        name = f"{INSTANCE_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{_safe_label(label)}"
        try:
            os.mkdir(root / "instances" / name)
        except FileExistsError:
            continue
        return root / "instances" / name
    raise UserError(f"cannot create a tracefs instance under {root}/instances")


def write_control(instance: Path, name: str, value: str, append: bool = False) -> None:
    """Write ``value`` to the instance's control file ``name`` (appended: added to it)."""
    flags = os.O_WRONLY | (0 if append else os.O_TRUNC)
    fd = os.open(instance / name, flags)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def remove_instance(instance: Path) -> None:
    """Remove the instance, waiting while the kernel says it is busy (a file of it still
    open)."""
    def gone() -> bool | None:
        try:
            os.rmdir(instance)
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                return None
            raise
        return True

    wait_until(gone, REMOVE_TIMEOUT, f"tracefs instance {instance} to be removable",
               interval=TIMEOUTS.trace_idle)


def _instance_owner(name: str) -> int | None:
    match = re.match(re.escape(INSTANCE_PREFIX) + r"(\d+)-", name)
    return int(match.group(1)) if match else None


def remove_stale_instances(root: Path) -> list[str]:
    """Remove instances of ours whose owning process is gone (killed mid-trace): each one
    holds its ring buffer in kernel memory until removed."""
    removed = []
    try:
        names = os.listdir(root / "instances")
    except OSError:
        return removed
    for name in names:
        owner = _instance_owner(name)
        if owner is None or owner == os.getpid() or Path(f"/proc/{owner}").exists():
            continue
        try:
            os.rmdir(root / "instances" / name)
            removed.append(name)
        except OSError:
            pass
    return removed


# ---- the ring buffer's counters --------------------------------------------------------------

def read_stats(instance: Path) -> dict[str, dict[str, int]]:
    """cpuN -> the kernel's counters for that CPU's ring buffer (per_cpu/cpuN/stats)."""
    out: dict[str, dict[str, int]] = {}
    for cpu_dir in sorted((instance / "per_cpu").glob("cpu*")):
        text = read_or_empty(cpu_dir / "stats")
        values = {}
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in STATS_FIELDS:
                try:
                    values[STATS_FIELDS[key.strip()]] = int(value.split()[0])
                except (ValueError, IndexError):
                    pass
        out[cpu_dir.name] = values
    return out


def lost_in_stats(stats: dict[str, dict[str, int]]) -> int:
    """Events the kernel lost, over every CPU: overwritten, never committed, dropped."""
    return sum(v.get("overrun", 0) + v.get("commit_overrun", 0) + v.get("dropped_events", 0)
               for v in stats.values())
