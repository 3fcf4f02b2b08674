"""The host's System V shared memory segments, for removing the ones a run leaked.

critest's HostIpc specs make a segment on the host (``ipcmk -M 1048576``) and never remove
it; a segment outlives its maker. A run snapshots the segments before, and afterwards
removes those it made: new since the snapshot, attached nowhere, made by a process that
has exited.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sandcheck.host.proc import alive, run

SHM = Path("/proc/sysvipc/shm")


@dataclass(frozen=True)
class Segment:
    shmid: int
    size: int
    creator: int
    attached: int


def segments(table: Path = SHM) -> dict[int, Segment]:
    """shmid -> segment, from ``/proc/sysvipc/shm`` (empty where it cannot be read)."""
    try:
        lines = table.read_text().splitlines()[1:]
    except OSError:
        return {}
    found = {}
    for line in lines:
        f = line.split()
        if len(f) >= 7:
            found[int(f[1])] = Segment(int(f[1]), int(f[3]), int(f[4]), int(f[6]))
    return found


def leaked_since(before: dict[int, Segment], now: dict[int, Segment]) -> list[Segment]:
    return [s for shmid, s in sorted(now.items())
            if shmid not in before and s.attached == 0 and not alive(s.creator)]


def remove_leaked(before: dict[int, Segment]) -> list[str]:
    """Remove the segments made since ``before`` that nothing uses; says what it removed."""
    done = []
    for seg in leaked_since(before, segments()):
        if run(["ipcrm", "-m", str(seg.shmid)], check=False).returncode == 0:
            done.append(f"ipcrm -m {seg.shmid} ({seg.size} bytes, made by exited pid "
                        f"{seg.creator})")
    return done
