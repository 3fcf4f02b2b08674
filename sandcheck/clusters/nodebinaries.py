"""Which containerd the node backend drives, and which of a runtime's binaries containerd's
PATH holds (and which build of each it would run).
"""

from __future__ import annotations

import os
import shutil

from sandcheck.catalog import Runtime
from sandcheck.errors import UserError
from sandcheck.provision.paths import containerd17_path_dir


def default_containerd(requested: str | None = None) -> str:
    """The containerd the node tier drives: the one asked for, else the provisioned 1.7
    build (the release that runs runc, crun and the gVisor shim alike), else PATH's."""
    if requested:
        exe = shutil.which(requested)
        if exe is None:
            raise UserError(f"--containerd {requested}: no such executable")
        return exe
    built = containerd17_path_dir() / "containerd"
    if built.exists():
        return str(built)
    exe = shutil.which("containerd")
    if exe is None:
        raise UserError("containerd not found: run `sandcheck provision`")
    return exe


def absent_binaries(runtime: Runtime, path: str) -> list[str]:
    """The runtime's binaries not found on ``path``."""
    return [b for b in runtime.binaries if shutil.which(b, path=path) is None]


def binary_builds(runtimes: list[Runtime], path: str) -> dict[str, str]:
    """Which build of each runtime binary ``path`` finds (the path names the build:
    a ``gvisor-shim-oom-tolerant-*`` directory is the shim built for hosts without
    CAP_SYS_RESOURCE)."""
    found = {}
    for rt in runtimes:
        for name in rt.binaries:
            exe = shutil.which(name, path=path)
            found[name] = os.path.realpath(exe) if exe else "not found"
    return found
