"""Where the kwok backend finds kwok's controller, and what it lacks here."""

from __future__ import annotations

import os
import shutil

from sandcheck.errors import UserError
from sandcheck.provision.paths import path_dir
from sandcheck.provision.pins import KWOK_VERSION
from sandcheck.provision.tools import KWOK

INSTALL_HINT = "run `sandcheck provision --kwok`"


def kwok_binary() -> str:
    """The kwok `sandcheck provision --kwok` linked or built, else PATH's; UserError
    naming the provision command."""
    for cand in (path_dir() / "kwok", KWOK.binaries()["kwok"]):
        if cand.is_file() and os.access(cand, os.X_OK):
            return str(cand)
    found = shutil.which("kwok")
    if found is None:
        raise UserError(f"the kwok backend needs kwok {KWOK_VERSION}: {INSTALL_HINT}")
    return found


def unavailable() -> str | None:
    """Why the kwok backend cannot run here (None: it can); the registry's check. Its real
    node and control plane are the local backend's, so what that lacks, this lacks too."""
    from sandcheck.clusters.local.binaries import unavailable as local_unavailable

    try:
        kwok_binary()
    except UserError as exc:
        return str(exc)
    why = local_unavailable()
    return None if why is None else f"the kwok backend's cluster: {why}"
