"""Mounts: the mount table, what is mounted below a path or made from files below it, and
unmounting it."""

from __future__ import annotations

from sandcheck.host.proc import run
from sandcheck.timeouts import TIMEOUTS


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


def below(path: str, prefix: str) -> bool:
    """Whether ``path`` is ``prefix`` or inside it."""
    return path == prefix.rstrip("/") or path.startswith(prefix.rstrip("/") + "/")


def _deepest_first(points: list[str]) -> list[str]:
    return sorted(set(points), key=lambda p: (-p.count("/"), p))


def mounts_under(prefix: str, mountinfo: str | None = None) -> list[str]:
    """Mount points at or below ``prefix``, deepest first."""
    return _deepest_first([p for p, _, _ in mount_table(mountinfo) if below(p, prefix)])


OVERLAY_DIRS = ("lowerdir", "upperdir", "workdir")


def overlay_dirs(options: str) -> list[str]:
    """The directories an overlay mount is made of, from its super options."""
    dirs = []
    for option in options.split(","):
        key, _, value = option.partition("=")
        if key in OVERLAY_DIRS:
            dirs += [d for d in value.split(":") if d]
    return dirs


def mounts_of(prefix: str, mountinfo: str | None = None) -> list[str]:
    """Mount points at or below ``prefix`` and overlay mounts made from directories below
    it wherever they are mounted (a container's rootfs outlives a deleted work dir, or
    sits elsewhere), deepest first."""
    return _deepest_first([
        point for point, fstype, options in mount_table(mountinfo)
        if below(point, prefix) or (fstype == "overlay" and any(
            below(d, prefix) for d in overlay_dirs(options)))])


def unmount_all(prefix: str) -> list[str]:
    """Unmount everything at or below ``prefix`` and every overlay made from it, deepest
    first; a mount that stays busy is detached lazily. Three rounds: unmounting may reveal
    mounts that were stacked below."""
    done = []
    for _ in range(3):
        points = mounts_of(prefix)
        if not points:
            break
        for point in points:
            if run(["umount", point], check=False, timeout=TIMEOUTS.command).returncode != 0:
                run(["umount", "-l", point], check=False, timeout=TIMEOUTS.command)
            done.append(point)
    return done
