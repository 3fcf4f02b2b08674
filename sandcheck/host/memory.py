"""Memory readings of this host: what a set of processes and cgroups costs it.

Three views, because each misses something the others see: MemAvailable (everything,
but the whole machine's noise with it), PSS of processes (shared pages split among their
sharers) and memory cgroups (what a kubelet would account). The memory benchmark
combines them; nothing here knows about pods or backends, only pids and cgroup paths.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from sandcheck.host.cgroups import (
    cgroup_procs,
    memory_cgroup_dir,
    memory_cgroup_of,
    memory_stat,
    memory_usage,
)
from sandcheck.timeouts import TIMEOUTS, WaitTimeout, wait_until

MIB = 2**20
PAGE = os.sysconf("SC_PAGE_SIZE")
READ_WINDOW = 1.5
"""MemAvailable is the highest of the readings taken every ``TIMEOUTS.memory_read`` for
this many seconds (a measurement window, not a wait): ``READ_WINDOW / memory_read + 1``
readings, the first at once."""


# ---- the whole host -------------------------------------------------------------------------

def drop_caches() -> str | None:
    """Write back and drop clean page cache, dentries and inodes; the error text if not."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as exc:
        return f"cannot drop caches ({exc}): run as root to measure MemAvailable"
    return None


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/meminfo has no MemAvailable line (kernel older than 3.14)")


def percpu_free() -> int:
    """Free pages parked in the per-CPU page lists, which MemFree leaves out (on 6.x
    kernels these lists tune themselves up to tens of MiB)."""
    try:
        text = Path("/proc/zoneinfo").read_text()
    except OSError:
        return 0
    return sum(int(n) for n in re.findall(r"^\s+count:\s+(\d+)$", text, re.M)) * PAGE


def steady_mem_available(window: float = READ_WINDOW) -> tuple[int, list[int], str | None]:
    """MemAvailable (with the per-CPU free pages) at its highest over ``window`` seconds,
    page cache dropped before each reading. On the VMs this was written on, free memory
    dips by 64-128 MiB for well under a second now and then with no process and no other
    /proc/meminfo counter behind it (likely the virtio balloon's free page reporting); a
    pod's memory stays, so the highest reading is the one that holds what persists.

    Returns that reading, every reading, and the drop_caches error if there was one.
    """
    readings: list[int] = []
    error = None
    for index in range(int(window / TIMEOUTS.memory_read) + 1):
        if index:  # a measurement window, not a wait: every reading is taken
            time.sleep(TIMEOUTS.memory_read)
        error = error or drop_caches()
        readings.append(mem_available() + percpu_free())
    return max(readings), readings, error


def others_anon(exclude: set[int]) -> int:
    """Anonymous and shared-memory RSS of every process outside ``exclude`` (what another
    program allocating memory would show): how much the rest of the machine moved while
    MemAvailable was being compared."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in exclude:
            continue
        try:
            text = (entry / "status").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith(("RssAnon:", "RssShmem:")):
                total += int(line.split()[1]) * 1024
    return total


# ---- processes ------------------------------------------------------------------------------

def children_by_parent() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def process_tree(roots: list[int]) -> list[int]:
    """The roots and every live descendant."""
    kids = children_by_parent()
    seen: set[int] = set()
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid in seen or not Path(f"/proc/{pid}").exists():
            continue
        seen.add(pid)
        todo.extend(kids.get(pid, []))
    return sorted(seen)


def process_name(pid: int) -> str:
    """argv[0]'s base name (runsc names its processes there), else the kernel's comm."""
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        return os.path.basename(argv0) or Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def pss_bytes(pid: int) -> int | None:
    """Proportional set size of one process; None when it is gone or unreadable."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except FileNotFoundError:
        try:
            text = Path(f"/proc/{pid}/smaps").read_text()  # kernels before 4.14
        except OSError:
            return None
    except OSError:
        return None
    return sum(int(line.split()[1]) for line in text.splitlines()
               if line.startswith("Pss:")) * 1024


def started_at(pid: int) -> float | None:
    """Seconds after boot at which a process started (/proc/PID/stat field 22)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def boot_clock() -> float:
    """Now, on the clock /proc/PID/stat start times are counted on."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def identities(pids: list[int]) -> dict[int, float | None]:
    """Each pid with its start time: what tells the process from a later one given the
    same pid (a node that started hundreds of processes since reuses pids)."""
    return {pid: started_at(pid) for pid in pids}


def processes_left(born: dict[int, float | None], timeout: float) -> list[int]:
    """Wait up to ``timeout`` for the processes ``born`` names (``identities``, taken while
    they ran) to exit; the ones still alive then, a reused pid not counted."""
    def living() -> list[int]:
        return [p for p, start in born.items()
                if Path(f"/proc/{p}").exists() and started_at(p) == start]

    try:
        wait_until(lambda: True if not living() else None, timeout,
                   f"pids {list(born)[:10]} to exit", interval=TIMEOUTS.exit_poll)
    except WaitTimeout:
        pass
    return living()


# ---- one group of processes: PSS and memory cgroups -----------------------------------------

def own_cgroups(tree: list[int], reported: list[str], since: float) -> list[str]:
    """The memory cgroups that belong to ``tree`` alone: those its runtime reports, and
    those of its processes that hold nothing but its processes or processes started after
    ``since`` (a runtime helper nobody named). Never a shared cgroup (a shim's, which it
    shares with the older containerd); an ancestor stands for its descendants."""
    members = set(tree)
    own = {cg for cg in reported if memory_cgroup_dir(cg).is_dir()}
    for cg in {cg for cg in (memory_cgroup_of(p) for p in tree) if cg} - own:
        procs = cgroup_procs(memory_cgroup_dir(cg))
        if procs is None or not cg.strip("/"):
            continue
        if all(p in members or (started_at(p) or 0.0) >= since for p in procs):
            own.add(cg)
    return sorted(cg for cg in own
                  if not any(cg.startswith(other.rstrip("/") + "/") for other in own))


def with_cgroup_members(tree: list[int], cgroups: list[str]) -> list[int]:
    """The tree plus every process (and descendant) in ``cgroups``."""
    extra = [p for cg in cgroups for p in cgroup_procs(memory_cgroup_dir(cg)) or ()]
    return process_tree(sorted(set(tree) | set(extra))) if extra else tree


def _mib(value: int | None) -> float | None:
    return None if value is None else round(value / MIB, 2)


STAT_SHOWN = ("rss", "cache", "shmem", "anon", "file")
"""memory.stat fields shown in evidence (v1 names, then v2 names)."""


@dataclass
class GroupMemory:
    """PSS of a group of processes and the usage of its own memory cgroups."""

    processes: list[tuple[int, str, int | None]] = field(default_factory=list)
    """(pid, name, PSS bytes)."""
    cgroups: list[tuple[str, int | None]] = field(default_factory=list)
    """(cgroup path, usage bytes)."""

    @property
    def pss(self) -> int | None:
        return sum(b for _, _, b in self.processes if b is not None) if self.processes else None

    @property
    def cgroup(self) -> int | None:
        return sum(u for _, u in self.cgroups if u is not None) if self.cgroups else None

    def evidence(self) -> dict:
        """MiB, with each process and cgroup (and its memory.stat) for the report."""
        return {
            "processes": [{"pid": pid, "name": name, "pss_mib": _mib(b)}
                          for pid, name, b in self.processes],
            "cgroups": [{"path": cg, "usage_mib": _mib(u), **_stat_mib(cg)}
                        for cg, u in self.cgroups],
        }


def _stat_mib(cgroup: str) -> dict[str, float | None]:
    stat = memory_stat(memory_cgroup_dir(cgroup))
    return {k: _mib(stat[k]) for k in STAT_SHOWN if k in stat}


def group_memory(roots: list[int], reported: list[str], since: float) -> GroupMemory:
    """What the processes ``roots`` (and their descendants and cgroup mates) cost: PSS of
    each, and the usage of the memory cgroups that are theirs alone (see own_cgroups)."""
    tree = process_tree(sorted(roots))
    cgroups = own_cgroups(tree, reported, since)
    tree = with_cgroup_members(tree, cgroups)
    return GroupMemory(
        processes=[(pid, process_name(pid), pss_bytes(pid)) for pid in tree],
        cgroups=[(cg, memory_usage(memory_cgroup_dir(cg))) for cg in cgroups])
