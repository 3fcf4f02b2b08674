"""Find and remove what a crashed or killed run left: daemons, shims, sandboxes, pods,
mounts, cgroups, bridges and work directories.

A run is found two ways: by its work dirs under WORK_BASE (``<backend>-<run id>``, with the
pid of the process that owns them), and by its cgroups (``/sandcheck-[<backend>-]<run id>``
in every hierarchy, with the owner recorded there too), so a run whose work dir was deleted
is still found. Processes are found by cgroup, whether or not a daemon that knew them is
alive; mounts by where they are and by what they are made from.

What a run leaves outside its work dir depends on its backend, so each work dir is handed
to the remover its backend's registry entry names; this module knows no backend itself.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sandcheck.clusters import registry
from sandcheck.host import proc as hostproc
from sandcheck.host import runcgroups
from sandcheck.host.cgroups import remove_subtree
from sandcheck.host.mounts import mounts_of
from sandcheck.host.workdir import (
    OWNER_FILE,
    WORK_BASE,
    delete_tree,
    owner_alive,
    run_id_of,
)


def cleanup(dry_run: bool = False, force: bool = False, base: Path | None = None,
            run: str | None = None) -> list[str]:
    """Remove every dead run (only ``run``, when given) and what lives in it; returns what
    was done. ``force``: also runs that are still going."""
    base = WORK_BASE if base is None else base
    workdirs = sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
    live = {run_id_of(w) for w in workdirs if owner_alive(w)}
    if run is not None:
        workdirs = [w for w in workdirs if run_id_of(w) == run]
    done: list[str] = []
    removed: set[str] = set()
    for workdir in workdirs:
        if owner_alive(workdir) and not force:
            done.append(f"skip {workdir}: its run is still going (pid in {OWNER_FILE})")
            continue
        done += _remove_workdir(workdir, dry_run)
        removed.add(run_id_of(workdir))
    cgroup_runs = runcgroups.runs_in_cgroups() if run is None else {
        run: runcgroups.cgroups_of_run(run)}
    for run_id, cgroups in sorted(cgroup_runs.items()):
        if not cgroups or (dry_run and run_id in removed):
            continue
        if not force and (run_id in live or any(runcgroups.owner_alive(c) for c in cgroups)):
            done.append(f"skip run {run_id}: cgroups {', '.join(cgroups)}: its run is still "
                        "going")
        elif not (force or run_id in removed or run is not None or any(
                runcgroups.owner_alive(c) is False for c in cgroups)):
            done.append(f"skip run {run_id}: cgroups {', '.join(cgroups)} record no owner; "
                        f"`sandcheck cleanup --run {run_id}` removes them")
        else:
            done += _remove_cgroup_run(run_id, cgroups, base, dry_run)
    if not done:
        done.append(f"nothing to clean under {base}" + (f" for run {run}" if run else ""))
    return done


def _members(cgroups: list[str]) -> list[int]:
    return sorted({pid for c in cgroups for pid in runcgroups.members(c)})


def _in_killed_cgroups(cgroups: list[str], remove: Callable[[], list[str]]) -> list[str]:
    """Kill every process in ``cgroups`` first (a live daemon would recreate what is
    removed after it), then ``remove`` the rest, then the cgroups; indented lines."""
    done = [line for cgroup in cgroups for line in runcgroups.kill_tree(cgroup)]
    done += remove()
    done += [line for cgroup in cgroups for line in remove_subtree(cgroup)]
    return [f"  {line}" for line in done]


def _remove_workdir(workdir: Path, dry_run: bool) -> list[str]:
    cgroups = runcgroups.cgroups_of_run(run_id_of(workdir))
    procs = {pid for pid, _ in hostproc.processes_naming(workdir)} | set(_members(cgroups))
    mounts = mounts_of(str(workdir))
    done = [f"{'would remove' if dry_run else 'remove'} {workdir}: {len(procs)} processes, "
            f"{len(mounts)} mounts, {len(cgroups)} cgroups"]
    if dry_run:
        return done
    return done + _in_killed_cgroups(cgroups, lambda: _remove_named(workdir))


def _remove_named(workdir: Path) -> list[str]:
    """After the run's cgroups (its daemons and pods: every process a run starts is born in
    one), the backend's leftovers and the work dir."""
    entry = registry.for_workdir(workdir)
    done = [] if entry is None else entry.remove_leftovers(workdir)
    delete_tree(workdir)
    return done


def _remove_cgroup_run(run_id: str, cgroups: list[str], base: Path, dry_run: bool
                       ) -> list[str]:
    """A dead run's cgroups that outlived its work dirs (deleted, or just removed while a
    cgroup stayed busy): their processes, what the backends left named by the run, mounts
    made from the work dirs it had, the cgroups."""
    pids = _members(cgroups)
    done = [f"{'would remove' if dry_run else 'remove'} run {run_id} (no work dir left): "
            f"{len(pids)} processes in cgroups {', '.join(cgroups)}"]
    if dry_run:
        return done
    return done + _in_killed_cgroups(cgroups, lambda: _remove_gone(run_id, base))


def _remove_gone(run_id: str, base: Path) -> list[str]:
    """Bridges and links named by the run, mounts made from the work dirs it had."""
    done = []
    for entry in registry.BACKENDS.values():
        if entry.workdir_prefix is not None:
            gone = base / f"{entry.workdir_prefix}-{run_id}"
            done += entry.remove_leftovers(gone)
            delete_tree(gone)
    return done
