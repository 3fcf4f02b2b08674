"""Host processes: bounded commands, finding processes, stopping them."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterable
from pathlib import Path

from sandcheck.timeouts import TIMEOUTS, WaitTimeout, wait_until, watch_paused


def run(argv: list[str], timeout: float = TIMEOUTS.command, check: bool = True,
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


def processes_naming(path: Path) -> list[tuple[int, str]]:
    """(pid, cmdline) of every process whose command line names ``path`` or a path below
    it; ``/w/node-1`` does not name ``/w/node-12`` (another run's work dir)."""
    pattern = re.compile(re.escape(str(path).rstrip("/")) + r"(?![\w.-])")
    return [(pid, cmd) for pid, cmd in processes_mentioning(str(path).rstrip("/"))
            if pattern.search(cmd)]


@watch_paused()  # a removal runs to its end: a dead daemon must not leave it half-done
def kill_all(pids: Iterable[int], grace: float = TIMEOUTS.kill_grace) -> list[int]:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL and wait as long again.
    Returns the pids signalled. A process that outlives both waits is left (it is stuck
    in the kernel; nothing more can be done from here) and reported by ``alive``."""
    pids = list(pids)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        living = [p for p in pids if alive(p)]
        if not living:
            break
        for pid in living:
            _signal(pid, sig)
        wait_gone(living, grace)
    return pids


def wait_gone(pids: list[int], timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for every pid to exit; False when some still run."""
    try:
        return wait_until(lambda: True if not any(alive(p) for p in pids) else None, timeout,
                          f"pids {pids} to exit", interval=TIMEOUTS.kill_poll)
    except WaitTimeout:
        return False


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie child of ours is reaped and counts as gone)."""
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


def memory(pid: int) -> dict[str, int] | None:
    """A process's resident memory now and at its peak (VmRSS, VmHWM), in bytes; None
    once it is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    found = {}
    for line in lines:
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found["rss_bytes" if key == "VmRSS" else "peak_rss_bytes"] = \
                int(value.split()[0]) * 1024
    return found or None


def peak_rss_self() -> int:
    """This process's peak resident memory in bytes (getrusage counts kilobytes)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def kill_mentioning(path: Path) -> list[int]:
    """Stop every process whose command line names ``path`` (daemons, shims, sandboxes)."""
    return kill_all([pid for pid, _ in processes_naming(path)])
