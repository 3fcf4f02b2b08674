"""Writing a node's files safely: a timestamped backup first, then a temp file in the same
directory renamed over the target, so a reader (containerd on restart) sees the old file
or the new one, never half of one; and an exclusive lock file for what one process at a
time may do on this machine."""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive flock on ``path`` for the block (concurrent runs build or install
    once; one critest at a time holds its fixed host ports)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def backup(path: Path) -> Path:
    """A byte-for-byte copy next to ``path`` (``NAME.sandcheck-<stamp>.bak``)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d%H%M%S")
    saved = path.with_name(f"{path.name}.sandcheck-{stamp}.bak")
    saved.write_bytes(path.read_bytes())
    return saved


def atomic_write(path: Path, data: str | bytes, backup_first: bool = False) -> Path | None:
    """Write via a temp file in the same directory and rename, keeping the file's mode and
    owner; with ``backup_first``, back the old file up first. Returns the backup's path."""
    saved = backup(path) if backup_first and path.exists() else None
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        if path.exists():
            st = path.stat()
            os.chmod(tmp, st.st_mode & 0o7777)
            os.chown(tmp, st.st_uid, st.st_gid)
        else:
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return saved


def read_or_empty(path: Path | None) -> str:
    """A text file's content, "" when there is none or it cannot be read (logs, optional
    kernel lists: evidence, never a reason to fail)."""
    try:
        return path.read_text(errors="replace") if path is not None else ""
    except OSError:
        return ""


def tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a daemon's log, for an error message."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
