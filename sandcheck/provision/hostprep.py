"""The host changes a run may need, each an explicit step that says what it changed.

crun refuses a hybrid-cgroup host whose cgroup2 mount still holds controllers ("cgroups in
hybrid mode not supported, drop all controllers from cgroupv2"); CRI lowers oom_score_adj,
which needs CAP_SYS_RESOURCE (decides whether the gVisor shim is the tolerant build).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable
from pathlib import Path

from sandcheck.errors import ComponentError, UserError
from sandcheck.host.cgroups import cgroup2_controllers, cgroup_mode
from sandcheck.host.command import run
from sandcheck.progress import Progress
from sandcheck.provision.command import STDERR
from sandcheck.timeouts import TIMEOUTS

CAP_SYS_RESOURCE = 24


def has_capability(cap: int, status_text: str | None = None) -> bool:
    """Whether this process has capability number ``cap`` in its effective set."""
    if status_text is None:
        status_text = Path("/proc/self/status").read_text()
    m = re.search(r"^CapEff:\s*([0-9a-fA-F]+)", status_text, re.M)
    return bool(m) and bool(int(m.group(1), 16) >> cap & 1)


def prepare_cgroups_for_crun(dry_run: bool = False,
                             progress: Progress = STDERR) -> list[str]:
    """Make a hybrid-cgroup host usable by crun; returns the changes made (or planned).

    Mounting each controller the cgroup2 mount holds as a cgroup v1 hierarchy under
    /sys/fs/cgroup/NAME moves it off cgroup2. Nothing is done on a pure v1 or v2 host or
    when the cgroup2 list is already empty.
    """
    if cgroup_mode() != "hybrid":
        return []
    controllers = cgroup2_controllers()
    if not controllers:
        progress("cgroups: hybrid, cgroup2 holds no controllers; nothing to do for crun")
        return []
    if os.geteuid() != 0:
        raise UserError(
            f"crun cannot run on this hybrid-cgroup host while cgroup2 holds "
            f"{', '.join(controllers)}; as root: "
            + "; ".join(
                f"mkdir -p /sys/fs/cgroup/{c} && mount -t cgroup -o {c} cgroup /sys/fs/cgroup/{c}"
                for c in controllers
            )
        )
    changes = []
    for ctl in controllers:
        point = Path("/sys/fs/cgroup") / ctl
        change = f"mount -t cgroup -o {ctl} cgroup {point}"
        changes.append(change)
        if dry_run:
            continue
        progress(f"cgroups: {change} (moves {ctl} off cgroup2 so crun accepts this host)")
        point.mkdir(exist_ok=True)
        run(["mount", "-t", "cgroup", "-o", ctl, "cgroup", str(point)], timeout=TIMEOUTS.command)
    left = [] if dry_run else cgroup2_controllers()
    if left:
        raise ComponentError(f"cgroup2 still holds {', '.join(left)} after {changes}")
    return changes


def undo_cgroups_for_crun(changes: Iterable[str],
                          progress: Progress = STDERR) -> list[str]:
    """Unmount the hierarchies ``prepare_cgroups_for_crun`` mounted (controllers go back to
    cgroup2 once their v1 hierarchy has no child cgroups)."""
    undone = []
    for change in changes:
        point = change.rsplit(" ", 1)[-1]
        if run(["umount", point], timeout=TIMEOUTS.command, check=False).returncode == 0:
            with contextlib.suppress(OSError):
                os.rmdir(point)
            undone.append(point)
            progress(f"cgroups: unmounted {point}")
    return undone
