"""Where provisioned tools live. Cheap to import: runtime code needs only these paths.

Nothing is written to /usr/local/bin unless asked: built tools are linked into
directories of the cache that sandcheck puts first on PATH of the processes it starts.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path


def cache_dir() -> Path:
    """``$SANDCHECK_CACHE`` or ``~/.cache/sandcheck``."""
    env = os.environ.get("SANDCHECK_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sandcheck"


def path_dir() -> Path:
    """Links to the built tools; put first on PATH of the processes sandcheck starts."""
    return cache_dir() / "path"


def containerd2_path_dir() -> Path:
    """containerd 2.x and its runc shim: first on PATH only for a containerd 2.x daemon, so a
    containerd 1.x keeps using the shim from its own package."""
    return cache_dir() / "path-containerd2"


def containerd17_path_dir() -> Path:
    """containerd 1.7 and its runc shim, first on PATH only for that daemon."""
    return cache_dir() / "path-containerd17"


def unpacked_dir(package: str) -> Path:
    """Where ``apt_unpack`` puts a Debian package's files (not installed)."""
    return cache_dir() / "debs" / package


def search_path(extra_first: Sequence[Path] = ()) -> str:
    """PATH for processes sandcheck starts: its link dirs, then the inherited PATH."""
    parts = [str(p) for p in (*extra_first, path_dir())]
    return os.pathsep.join([*parts, os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")])


def which(name: str, extra: Sequence[Path] = ()) -> str | None:
    """``name`` in ``extra``, the link dir, then PATH: the binary a provisioned run uses."""
    for d in (*extra, path_dir()):
        cand = Path(d) / name
        if os.access(cand, os.X_OK):
            return str(cand)
    return shutil.which(name)
