"""Mounts: the mount table, what is mounted below a path, and unmounting it."""

from __future__ import annotations

from sandcheck.clusters.host.proc import run
from sandcheck.clusters.timeouts import TIMEOUTS


def mount_table(mountinfo: str | None = None) -> list[tuple[str, str, str]]:
    """(mount point, fs type, super options) from /proc/self/mountinfo (or the text given)."""
    if mountinfo is None:
        with open("/proc/self/mountinfo") as fh:
            mountinfo = fh.read()
    out = []
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        head, fields = left.split(), right.split()
        if len(head) >= 5 and len(fields) >= 3:
            point = head[4].encode().decode("unicode_escape")
            out.append((point, fields[0], fields[2]))
    return out


def mounts_under(prefix: str) -> list[str]:
    """Mount points at or below ``prefix``, deepest first."""
    points = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == prefix or point.startswith(prefix.rstrip("/") + "/"):
                points.append(point)
    return sorted(set(points), key=lambda p: (-p.count("/"), p))


def unmount_all(prefix: str) -> list[str]:
    """Unmount everything at or below ``prefix``, deepest first; a mount that stays busy is
    detached lazily. Three rounds: unmounting may reveal mounts that were stacked below."""
    done = []
    for _ in range(3):
        points = mounts_under(prefix)
        if not points:
            break
        for point in points:
            if run(["umount", point], check=False, timeout=TIMEOUTS.command).returncode != 0:
                run(["umount", "-l", point], check=False, timeout=TIMEOUTS.command)
            done.append(point)
    return done
