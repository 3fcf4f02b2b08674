"""What a local run leaves outside its work dir, and its removal: every process in the
run's cgroup root (the components and, below kubelet's pod cgroups, the pods' processes,
alive or not) and the cgroups themselves, and kubelet's links in /var/log/containers (a
fixed path kubelet does not let one move). stop() calls this, and so does
``sandcheck cleanup`` for a run that died."""

from __future__ import annotations

import os
from pathlib import Path

from sandcheck.clusters.local.kubelet import cgroup_root
from sandcheck.host.runcgroups import release
from sandcheck.host.workdir import run_id_of

CONTAINER_LOGS_DIR = Path("/var/log/containers")


def remove_leftovers(workdir: Path, remove_logs_dir: bool = False) -> list[str]:
    """Remove what the local run of ``workdir`` left outside it: kill what still runs in
    its cgroups, remove them; lines say what was done. ``remove_logs_dir``: kubelet made
    /var/log/containers for this run, so it goes too when empty."""
    return [*release(cgroup_root(run_id_of(workdir))),
            *remove_container_log_links(workdir, remove_dir=remove_logs_dir)]


def remove_container_log_links(workdir: Path, remove_dir: bool = False,
                               logs_dir: Path = CONTAINER_LOGS_DIR) -> list[str]:
    """kubelet's symlinks in ``logs_dir`` that point into ``workdir`` (others' links stay);
    the dir itself too when ``remove_dir`` and it is empty."""
    done: list[str] = []
    if not logs_dir.is_dir():
        return done
    inside = str(workdir).rstrip("/") + "/"
    for link in logs_dir.iterdir():
        try:
            if link.is_symlink() and os.readlink(link).startswith(inside):
                link.unlink()
                done.append(f"rm {link}")
        except OSError:
            pass
    if remove_dir:
        try:
            logs_dir.rmdir()
            done.append(f"rmdir {logs_dir}")
        except OSError:
            pass
    return done
