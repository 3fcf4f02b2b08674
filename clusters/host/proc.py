"""Host process, mount and namespace housekeeping shared by every backend.

Everything sandcheck starts on a host lives under one work base and carries
``sandcheck`` in its path, so what a crashed run left can be found by path alone.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

WORK_BASE = Path(os.environ.get("SANDCHECK_WORK", "/var/tmp/sandcheck"))


def run(argv: list[str], timeout: float = 120, check: bool = True,
        **kw) -> subprocess.CompletedProcess:
    """subprocess.run with a list argv, text output and a bounded wait."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, argv, proc.stdout, proc.stderr)
    return proc


def processes_mentioning(needle: str) -> list[tuple[int, str]]:
    """(pid, cmdline) of every process whose command line contains ``needle``."""
    found = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmd:
            found.append((int(entry.name), cmd.strip()))
    return found


def kill_all(pids: Iterable[int], grace: float = 5.0) -> list[int]:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL. Returns the pids signalled."""
    pids = list(pids)
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    for pid in pids:
        if _alive(pid):
            _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    return pids


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    if state == "Z":
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        return False
    return True


def mounts_under(prefix: str) -> list[str]:
    """Mount points at or below ``prefix``, deepest first."""
    points = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == prefix or point.startswith(prefix.rstrip("/") + "/"):
                points.append(point)
    return sorted(set(points), key=lambda p: (-p.count("/"), p))


def unmount_all(prefix: str) -> list[str]:
    done = []
    for _ in range(3):
        points = mounts_under(prefix)
        if not points:
            break
        for point in points:
            if run(["umount", point], check=False, timeout=30).returncode != 0:
                run(["umount", "-l", point], check=False, timeout=30)
            done.append(point)
    return done


def kill_mentioning(path: Path) -> list[int]:
    """Stop every process whose command line names ``path`` (daemons, shims, sandboxes)."""
    return kill_all([pid for pid, _ in processes_mentioning(str(path))])


def remove_tree(path: Path) -> None:
    """Stop the processes that name ``path``, unmount anything below it, then delete it."""
    kill_mentioning(path)
    if not path.exists():
        return
    unmount_all(str(path))
    shutil.rmtree(path, ignore_errors=True)


def run_id_of(workdir: Path) -> str:
    """The run id in a work dir's name (``node-<run id>``, ``local-<run id>``)."""
    return workdir.name.split("-", 1)[1] if "-" in workdir.name else workdir.name
