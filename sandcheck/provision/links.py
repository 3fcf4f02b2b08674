"""Links to built binaries in a directory sandcheck puts on PATH, replaced atomically."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path

from sandcheck.errors import UserError
from sandcheck.progress import Progress
from sandcheck.provision.command import STDERR
from sandcheck.provision.paths import path_dir


def install_links(binaries: Mapping[str, Path], bin_dir: Path | None = None, *,
                  system: bool = False,
                  progress: Progress = STDERR) -> dict[str, Path]:
    """Symlink each built binary as ``bin_dir/NAME`` (default ``path_dir()``).

    ``system=True`` links into /usr/local/bin instead; a file there that is not a
    symlink is never replaced. Returns link -> target.
    """
    if bin_dir is None:
        bin_dir = Path("/usr/local/bin") if system else path_dir()
    bin_dir.mkdir(parents=True, exist_ok=True)
    done: dict[str, Path] = {}
    changed = []
    for link_name, target in binaries.items():
        target = Path(target).resolve()
        link = bin_dir / link_name
        if link.is_symlink() and Path(os.readlink(link)) == target:
            done[link_name] = target
            continue
        if link.exists() and not link.is_symlink():
            raise UserError(
                f"{link} exists and is not a link sandcheck made: remove or rename "
                f"it, or link into another directory"
            )
        tmp = bin_dir / f".{link_name}.tmp-{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(target)
        os.replace(tmp, link)
        done[link_name] = target
        changed.append(link_name)
    if changed:
        progress(f"linked {', '.join(changed)} into {bin_dir}")
    return done
