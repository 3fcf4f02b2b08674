"""Find and remove what a crashed or killed run left: daemons, shims, sandboxes, mounts,
bridges and work directories. Everything sandcheck makes lives under WORK_BASE, one
directory per run, with the pid of the process that owns it.

What a run leaves outside its work dir depends on its backend, so each work dir is handed
to the remover its backend's registry entry names; this module knows no backend itself.
"""

from __future__ import annotations

from pathlib import Path

from sandcheck.clusters.backends import registry
from sandcheck.clusters.host import proc as hostproc
from sandcheck.clusters.host.mounts import mounts_under
from sandcheck.clusters.host.workdir import OWNER_FILE, WORK_BASE, owner_alive, remove_tree


def cleanup(dry_run: bool = False, force: bool = False, base: Path | None = None
            ) -> list[str]:
    """Remove every stale run directory and what lives in it; returns what was done.
    ``force``: also the dirs of runs that are still going."""
    base = WORK_BASE if base is None else base
    done: list[str] = []
    if not base.is_dir():
        return [f"nothing to clean: {base} does not exist"]
    for workdir in sorted(p for p in base.iterdir() if p.is_dir()):
        if owner_alive(workdir) and not force:
            done.append(f"skip {workdir}: its run is still going (pid in {OWNER_FILE})")
            continue
        procs = hostproc.processes_naming(workdir)
        mounts = mounts_under(str(workdir))
        done.append(f"{'would remove' if dry_run else 'remove'} {workdir}: "
                    f"{len(procs)} processes, {len(mounts)} mounts")
        if dry_run:
            continue
        # Processes first: a live daemon would recreate what is removed after it.
        hostproc.kill_mentioning(workdir)
        entry = registry.for_workdir(workdir)
        if entry is not None:
            done.extend(f"  {line}" for line in entry.remove_leftovers(workdir))
        remove_tree(workdir)
    if not done:
        done.append(f"nothing to clean under {base}")
    return done
