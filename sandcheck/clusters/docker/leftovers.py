"""What a dead docker run leaves outside its work dir, for ``sandcheck cleanup``.

The private dockerd, its containerd and shims name the work dir and are stopped by
cleanup's generic path, mounts below it likewise. Left for this module: the containers'
processes (they name nothing), the run's cgroup parent, the network's bridge, and, when
the run used a user's engine, its labelled containers and network in that engine.
"""

from __future__ import annotations

import json
from pathlib import Path

from sandcheck.clusters.docker.engine import ENGINE_FILE, bridge_name, connect
from sandcheck.clusters.docker.engine import remove_run_objects as remove_objects
from sandcheck.clusters.dockerd.daemon import cgroup_parent_of
from sandcheck.errors import UserError
from sandcheck.host import proc as hostproc
from sandcheck.host.runcgroups import members as cgroup_members  # noqa: F401 (kind's)
from sandcheck.host.runcgroups import release
from sandcheck.host.workdir import run_id_of
from sandcheck.timeouts import TIMEOUTS


def remove_engine_objects(workdir: Path) -> list[str]:
    """The run's containers and network in a user's engine (engine.json says which)."""
    try:
        engine = json.loads((workdir / ENGINE_FILE).read_text())
    except (OSError, ValueError):
        return []
    if engine.get("private"):
        return []
    try:
        client = connect(engine["host"])
    except UserError as exc:
        return [f"cannot reach {engine['host']} to remove the run's containers: {exc}"]
    try:
        return remove_objects(client, run_id_of(workdir))
    finally:
        client.close()


def remove_leftovers(workdir: Path) -> list[str]:
    run_id = run_id_of(workdir)
    done = remove_engine_objects(workdir)
    done += release(cgroup_parent_of(run_id))
    bridge = bridge_name(run_id)
    if Path("/sys/class/net", bridge).exists():
        hostproc.run(["ip", "link", "delete", bridge], check=False, timeout=TIMEOUTS.command)
        done.append(f"ip link delete {bridge}")
    return done
