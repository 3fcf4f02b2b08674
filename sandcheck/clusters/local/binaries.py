"""Which programs the local backend runs, where it finds them, and what is missing.

The Kubernetes components and etcd are the pinned Go builds of ``sandcheck provision
--kubernetes`` (no distribution packages them at matching versions); openssl makes the
run's certificates and util-linux's unshare and mount give kubelet and the API server
mount namespaces of their own.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from sandcheck.clusters import node
from sandcheck.errors import UserError
from sandcheck.provision.kubernetes import KUBERNETES_COMMANDS
from sandcheck.provision.paths import cache_dir, path_dir
from sandcheck.provision.pins import ETCD_VERSION, KUBERNETES_VERSION

HOST_TOOLS = {"openssl": "openssl", "unshare": "util-linux", "mount": "util-linux"}
"""Programs taken from PATH -> the Debian package that has them."""


def candidates() -> dict[str, list[Path]]:
    """Each pinned program -> where it may be: the link `sandcheck provision --kubernetes`
    made, then the build in the cache."""
    bin_dir = cache_dir() / "bin"
    places = {name: [path_dir() / name, bin_dir / f"kubernetes-{KUBERNETES_VERSION}" / name]
              for name in KUBERNETES_COMMANDS}
    places["etcd"] = [path_dir() / "etcd", bin_dir / f"etcd-{ETCD_VERSION}" / "etcd"]
    return places


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_binaries() -> dict[str, str]:
    """Program name -> path of every pinned program; UserError naming what is missing and
    the command that provides it."""
    found: dict[str, str] = {}
    missing: list[str] = []
    for name, places in candidates().items():
        exe = next((p for p in places if _executable(p)), None)
        if exe is None:
            missing.append(name)
        else:
            found[name] = str(exe)
    if missing:
        raise UserError(f"the local backend needs {', '.join(missing)} (Kubernetes "
                        f"{KUBERNETES_VERSION}, etcd {ETCD_VERSION}): run "
                        "`sandcheck provision --kubernetes`")
    for tool, package in HOST_TOOLS.items():
        if shutil.which(tool) is None:
            raise UserError(f"the local backend needs {tool} on PATH: apt-get install "
                            f"{package}")
    return found


def unavailable() -> str | None:
    """Why the local backend cannot run here (None: it can); the registry's check. Its
    node is the node backend's containerd, so what that lacks, this lacks too."""
    try:
        find_binaries()
    except UserError as exc:
        return str(exc)
    why = node.unavailable()
    return None if why is None else f"the local backend's node: {why}"
