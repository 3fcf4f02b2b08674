"""Find and remove what a crashed or killed run left: daemons, shims, sandboxes, mounts,
bridges and work directories. Everything sandcheck makes lives under WORK_BASE,
one directory per run, with the pid of the process that owns it."""

from __future__ import annotations

from sandcheck.clusters.backends.node import remove_network
from sandcheck.clusters.host import proc as hostproc
from sandcheck.clusters.host.mounts import mounts_under
from sandcheck.clusters.host.workdir import (
    OWNER_FILE,
    WORK_BASE,
    owner_alive,
    remove_tree,
    run_id_of,
)


def cleanup(dry_run: bool = False, force: bool = False) -> list[str]:
    """Remove every stale run directory and what lives in it; returns what was done."""
    done: list[str] = []
    base = WORK_BASE
    if not base.is_dir():
        return ["nothing to clean: " + str(base) + " does not exist"]
    for workdir in sorted(p for p in base.iterdir() if p.is_dir()):
        if owner_alive(workdir) and not force:
            done.append(f"skip {workdir}: its run is still going (pid in {OWNER_FILE})")
            continue
        procs = hostproc.processes_mentioning(str(workdir))
        mounts = mounts_under(str(workdir))
        done.append(f"{'would remove' if dry_run else 'remove'} {workdir}: "
                    f"{len(procs)} processes, {len(mounts)} mounts")
        if dry_run:
            continue
        hostproc.kill_mentioning(workdir)
        remove_network(run_id_of(workdir))
        if workdir.name.startswith("local-"):
            from sandcheck.clusters.backends.local.cluster import remove_leftovers

            done.extend(f"  {line}" for line in remove_leftovers(workdir))
        remove_tree(workdir)
    if len(done) == 0:
        done.append(f"nothing to clean under {base}")
    return done
