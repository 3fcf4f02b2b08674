"""What a dead kind run leaves outside its work dir, and whether the backend can run here.

The private dockerd and its containerd name the work dir and go through cleanup's generic
path. Left for this module: the processes of the node containers (systemd, kubelet,
containerd, pods: they name nothing) in the run's cgroup parent, that cgroup subtree, and
the bridge of kind's docker network (recorded at creation in the work dir). The clusters of
a run live only in its private engine, so with the engine's processes and data gone no
cluster of the run is left anywhere.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sandcheck.clusters.docker.leftovers import cgroup_members
from sandcheck.clusters.dockerd.daemon import cgroup_parent_of
from sandcheck.clusters.kind.engine import BRIDGES_FILE
from sandcheck.host import proc as hostproc
from sandcheck.host.cgroups import remove_subtree
from sandcheck.host.workdir import run_id_of
from sandcheck.timeouts import TIMEOUTS


def remove_leftovers(workdir: Path) -> list[str]:
    relative = cgroup_parent_of(run_id_of(workdir))
    done: list[str] = []
    members = cgroup_members(relative)
    if members:
        hostproc.kill_all(members, grace=TIMEOUTS.kill_grace)
        done.append(f"killed {len(members)} kind node processes in {relative}")
    done += remove_subtree(relative)
    try:
        bridges = (workdir / BRIDGES_FILE).read_text().split()
    except OSError:
        bridges = []
    for bridge in bridges:
        if Path("/sys/class/net", bridge).exists():
            hostproc.run(["ip", "link", "delete", bridge], check=False, timeout=TIMEOUTS.command)
            done.append(f"ip link delete {bridge}")
    return done


def unavailable() -> str | None:
    """Why the kind backend cannot run here (None: it can)."""
    from sandcheck.clusters.kind.cli import INSTALL_HINT, kind_binary
    from sandcheck.errors import UserError
    from sandcheck.provision.kindnode.build import cached_node_image

    try:
        kind_binary()
    except UserError as exc:
        return str(exc)
    if shutil.which("dockerd") is None:
        return "dockerd not found: run `sandcheck provision --docker`"
    if cached_node_image() is None and shutil.which("debootstrap") is None:
        return f"no kind node image and no debootstrap to build one: {INSTALL_HINT}"
    return None
