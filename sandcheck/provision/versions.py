"""Versions of what a run used, for the report's environment fingerprint."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from collections.abc import Sequence
from typing import Any

from sandcheck.host.cgroups import cgroup2_controllers, cgroup_mode
from sandcheck.provision.paths import containerd2_path_dir, containerd17_path_dir, which
from sandcheck.timeouts import TIMEOUTS

_CONTAINERD = r"containerd\s+\S+\s+v?(\S+)"


def version_of(argv: Sequence[str], pattern: str = r"v?(\d+\.\d+[\w.+~-]*)") -> str | None:
    """The first match of ``pattern`` in a command's output; None when it fails to run."""
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True,
                              timeout=TIMEOUTS.command, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(pattern, proc.stdout + proc.stderr)
    return m.group(1) if m else None


def _of(exe: str | None, pattern: str) -> str | None:
    return version_of([exe, "--version"], pattern) if exe else None


def versions() -> dict[str, Any]:
    """Versions of everything a report should name; None for what is not installed."""
    out: dict[str, Any] = {"containerd": _of(shutil.which("containerd"), _CONTAINERD)}
    for key, where in (("containerd17", containerd17_path_dir()),
                       ("containerd2", containerd2_path_dir())):
        exe = where / "containerd"
        out[key] = _of(str(exe), _CONTAINERD) if os.access(exe, os.X_OK) else None
    out["runc"] = _of(shutil.which("runc"), r"runc version (\S+)")
    out["crun"] = _of(shutil.which("crun"), r"crun version (\S+)")
    out["runsc"] = _of(which("runsc"), r"runsc version (\S+)")
    out["youki"] = _of(which("youki"), r"youki version:? (\S+)")
    out["crictl"] = _of(which("crictl"), r"crictl version v?(\S+)")
    out["kernel"] = platform.release()
    out["cgroup_mode"] = cgroup_mode()
    out["cgroup2_controllers"] = cgroup2_controllers()
    return out
