"""The host syscalls a set of host processes (and their descendants) make, counted by the
kernel's own ``raw_syscalls:sys_enter`` tracepoint in a private tracefs instance.

This is the *exercised* host syscall surface of a runtime: what the processes working on a
workload's behalf (a runc container's processes and its shim; gVisor's Sentry, Gofer and
shim) really ask of the host kernel while the workload runs. The tracepoint fires after
seccomp, so a call a filter traps or denies (gVisor's systrap stubs, a container's default
profile) is not counted: only calls the host kernel executed are.

How the processes are followed, as verified on Linux 6.18 (tests/test_syscalltrace.py):

- ``set_event_pid`` filters by task id, so every thread that exists when tracing starts
  is added by its tid (a process's pid alone does not cover its running threads);
- ``options/event-fork`` adds every task a traced task clones afterwards, threads as well
  as processes, and drops it again when it is freed (a reused pid is not traced);
- descendants that already exist are found through /proc and added with their threads.

Each trace has its own instance (``instances/sandcheck-<pid>-<random>-<label>``): its
own pid filter, options and ring buffer, so traces running at once (parallel runs, xdist
workers) never see each other's processes and never touch the global buffer. The buffer
is drained while the workload runs; the kernel's own overrun and drop counters come back
with the result, which says whether it is complete.

Names come from the x86_64 table (``syscalls.syscall_table``): a 32-bit task's calls carry ia32
numbers that the tracepoint does not tell apart, so they would be misnamed.
"""

from __future__ import annotations

import errno
import os
import platform
import re
import secrets
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandcheck.errors import UserError
from sandcheck.host.mounts import mount_table
from sandcheck.host.proc import run
from sandcheck.host.syscalls import syscall_name, syscall_table
from sandcheck.timeouts import TIMEOUTS, wait_until

TRACEFS = Path("/sys/kernel/tracing")
INSTANCE_PREFIX = "sandcheck-"
PRIVATE_MOUNT = "sandcheck-tracefs-"
EVENTS = ("raw_syscalls/sys_enter", "sched/sched_process_fork", "sched/sched_process_exec",
          "task/task_rename")
"""sys_enter is the count; the other three keep a tid -> comm map exact at event time
(the comm the kernel prints is looked up at read time in a small global cache, which
reports ``<...>`` once other tasks have pushed the entry out)."""
BUFFER_KB_PER_CPU = 8192
BUFFER_KB_TOTAL_MAX = 65536
"""An entry is about 72 bytes: 8 MiB per CPU holds over 100k calls while the reader
catches up, and a many-core host is capped at 64 MiB in all."""
TID_ROUNDS = 10
"""Rounds of adding tids until a round finds none new: a thread that an untraced
pre-existing thread starts while the first round is written is found in the next one."""
READ_BYTES = 1 << 16
QUIET_READS = 3
"""After tracing stops, the pipe counts as drained when this many reads
``TIMEOUTS.trace_idle`` apart find it empty (a commit in flight on another CPU when
tracing stopped lands in between)."""
SAMPLE_LINES = 12
DRAIN_TIMEOUT = TIMEOUTS.component_stop
REMOVE_TIMEOUT = TIMEOUTS.kill_grace
STATS_FIELDS = {"entries": "entries", "overrun": "overrun",
                "commit overrun": "commit_overrun", "dropped events": "dropped_events",
                "read events": "read_events", "bytes": "bytes"}

HEAD_PATTERN = r"^\s*(?P<comm>.*)-(?P<pid>\d+)(?:\s+\(\s*(?P<tgid>[-\d]+)\))?"
HEAD = re.compile(HEAD_PATTERN + r"\s*$")
LINE = re.compile(HEAD_PATTERN + r"\s+\[\d+\]\s+(?:\S+\s+)?\d+\.\d+:\s+(?P<event>\w+):\s?"
                  r"(?P<body>.*)$")
SYS_ENTER = ": sys_enter: NR "
LOST = re.compile(r"CPU:\d+ \[LOST (\d+) EVENTS\]")
FORK = re.compile(r"child_comm=(?P<comm>.*) child_pid=(?P<pid>\d+)$")
EXEC = re.compile(r"filename=(?P<file>.*) pid=(?P<pid>\d+) old_pid=(?P<old>\d+)$")
RENAME = re.compile(r"^pid=(?P<pid>\d+) oldcomm=.* newcomm=(?P<comm>.*) oom_score_adj=-?\d+$")
FD_EXEC = re.compile(r"^/(dev|proc/self)/fd/\d+")
"""An exec through a file descriptor (execveat, fexecve) names the task after the file's
dentry, which the exec event does not carry."""
COMM_LEN = 15


# ---- syscall numbers -----------------------------------------------------------------------

# ---- processes ------------------------------------------------------------------------------

def task_ids(pid: int) -> set[int]:
    """Every thread of process ``pid`` (empty when it is gone)."""
    try:
        return {int(t) for t in os.listdir(f"/proc/{pid}/task")}
    except OSError:
        return set()


def descendants(pids: Iterable[int]) -> set[int]:
    """The processes below ``pids`` in the process tree now (not ``pids`` themselves)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found: set[int] = set()
    todo = list(pids)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found - set(pids)


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as fh:
            return fh.read().decode(errors="replace")
    except OSError:
        return None


def _proc_comm(tid: int) -> str | None:
    text = _read(f"/proc/{tid}/comm")
    return text.rstrip("\n") if text else None


def _proc_tgid(tid: int) -> int | None:
    match = re.search(r"^Tgid:\s+(\d+)$", _read(f"/proc/{tid}/status") or "", re.MULTILINE)
    return int(match.group(1)) if match else None


def _proc_argv0(pid: int) -> str | None:
    text = _read(f"/proc/{pid}/cmdline")
    return text.split("\0", 1)[0] if text else None


# ---- tracefs ---------------------------------------------------------------------------------

def tracefs_root() -> Path | None:
    """Where tracefs is mounted in this mount namespace (the usual place first). Another
    trace's private mount is not a candidate: it goes when that trace ends."""
    points = [point for point, fstype, _ in mount_table()
              if fstype == "tracefs" and not Path(point).name.startswith(PRIVATE_MOUNT)]
    if str(TRACEFS) in points:
        return TRACEFS
    return Path(points[0]) if points else None


def unavailable() -> str | None:
    """Why this host cannot trace syscalls (None when it can)."""
    if os.geteuid() != 0:
        return "tracing host syscalls needs root (tracefs and CAP_SYS_ADMIN)"
    if not Path("/sys/kernel/tracing").is_dir() and not Path("/sys/kernel/debug").is_dir():
        return "the kernel has no tracefs (CONFIG_FTRACE off)"
    return None


class TracefsMount:
    """The mounted tracefs, or one mounted privately for as long as the trace runs.

    tracefs is one superblock for the whole kernel: every mount shows the same instances.
    When none is mounted, ours goes on a fresh temporary directory and is unmounted at the
    end; /sys/kernel/tracing is never mounted or unmounted, since another run or tool may
    be using it and unmounting it under them would make their files vanish mid-trace. A
    private mount point is only ever removed with rmdir, so a mount that refused to go can
    never lead to deleting instance directories through it."""

    def __init__(self) -> None:
        self.root: Path | None = None
        self.mounted_by_us = False

    def __enter__(self) -> Path:
        found = tracefs_root()
        if found is not None:
            self.root = found
            return found
        point = Path(tempfile.mkdtemp(prefix=PRIVATE_MOUNT))
        proc = run(["mount", "-t", "tracefs", "tracefs", str(point)], check=False)
        if proc.returncode != 0:
            os.rmdir(point)
            raise UserError(f"cannot mount tracefs: {proc.stderr.strip()}; tracing host "
                            "syscalls needs root with CAP_SYS_ADMIN and a kernel with "
                            "tracefs")
        self.root, self.mounted_by_us = point, True
        return point

    def __exit__(self, *exc: object) -> None:
        if not self.mounted_by_us or self.root is None:
            return
        if run(["umount", str(self.root)], check=False).returncode != 0:
            run(["umount", "-l", str(self.root)], check=False)
        try:
            os.rmdir(self.root)
        except OSError:
            pass
        self.mounted_by_us = False


def _instance_owner(name: str) -> int | None:
    match = re.match(re.escape(INSTANCE_PREFIX) + r"(\d+)-", name)
    return int(match.group(1)) if match else None


def remove_stale_instances(root: Path) -> list[str]:
    """Remove instances of ours whose owning process is gone (killed mid-trace): each one
    holds its ring buffer in kernel memory until removed."""
    removed = []
    try:
        names = os.listdir(root / "instances")
    except OSError:
        return removed
    for name in names:
        owner = _instance_owner(name)
        if owner is None or owner == os.getpid() or Path(f"/proc/{owner}").exists():
            continue
        try:
            os.rmdir(root / "instances" / name)
            removed.append(name)
        except OSError:
            pass
    return removed


def read_stats(instance: Path) -> dict[str, dict[str, int]]:
    """cpuN -> the kernel's counters for that CPU's ring buffer (per_cpu/cpuN/stats)."""
    out: dict[str, dict[str, int]] = {}
    for cpu_dir in sorted((instance / "per_cpu").glob("cpu*")):
        text = _read(str(cpu_dir / "stats")) or ""
        values = {}
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in STATS_FIELDS:
                try:
                    values[STATS_FIELDS[key.strip()]] = int(value.split()[0])
                except (ValueError, IndexError):
                    pass
        out[cpu_dir.name] = values
    return out


def lost_in_stats(stats: dict[str, dict[str, int]]) -> int:
    return sum(v.get("overrun", 0) + v.get("commit_overrun", 0) + v.get("dropped_events", 0)
               for v in stats.values())


# ---- the result -----------------------------------------------------------------------------

@dataclass
class SyscallTraceResult:
    """What one trace saw. ``complete`` is False when the kernel lost events (then a call
    made only in the lost part may be missing from ``syscalls``)."""

    label: str
    syscalls: dict[int, str]
    """Distinct syscall numbers seen -> names."""
    counts: dict[str, int]
    by_comm: dict[str, dict[str, int]]
    """Task name (comm at the time of the call) -> syscall name -> calls."""
    processes: list[dict[str, Any]]
    """One entry per process image (tgid and exec generation): comms, argv0, syscalls."""
    total_events: int
    lost_events: int
    seconds: float
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> set[str]:
        return set(self.syscalls.values())

    @property
    def distinct(self) -> int:
        return len(self.syscalls)

    @property
    def complete(self) -> bool:
        return self.lost_events == 0

    def names_of(self, comm: str) -> set[str]:
        return set(self.by_comm.get(comm, {}))

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "distinct": self.distinct,
            "syscalls": sorted(self.names),
            "numbers": {name: nr for nr, name in sorted(self.syscalls.items())},
            "counts": dict(sorted(self.counts.items())),
            "by_comm": {c: dict(sorted(v.items())) for c, v in sorted(self.by_comm.items())},
            "distinct_by_comm": {c: len(v) for c, v in sorted(self.by_comm.items())},
            "processes": self.processes,
            "total_events": self.total_events,
            "lost_events": self.lost_events,
            "complete": self.complete,
            "seconds": round(self.seconds, 3),
            "evidence": self.evidence,
        }


class _Tally:
    """Folds trace_pipe lines into counts as they arrive, in the kernel's order (so a
    call is charged to the comm and process image of its moment). A sys_enter line costs
    two dict lookups and one counter: the reader must keep up with the kernel."""

    def __init__(self, names: dict[int, str]):
        self.names = names
        self.calls: Counter[tuple[str, tuple[int, int], int]] = Counter()
        """(comm, (tgid, exec generation), syscall number) -> calls."""
        self.heads: dict[str, tuple[int, str]] = {}
        self.context: dict[int, tuple[str, tuple[int, int]]] = {}
        self.argv0: dict[tuple[int, int], str | None] = {}
        self.generation: Counter[int] = Counter()
        self.comm: dict[int, str] = {}
        self.tgid: dict[int, int] = {}
        self.events: Counter[str] = Counter()
        self.syscall_lines = 0
        self.lost_lines = 0
        self.unparsed = 0
        self.samples: list[str] = []
        self.partial = ""

    def seed(self, tid: int) -> None:
        """What /proc says of a task traced from the start (later ones come by event)."""
        comm = _proc_comm(tid)
        if comm is not None:
            self.comm.setdefault(tid, comm)
        tgid = _proc_tgid(tid)
        if tgid is not None:
            self.tgid.setdefault(tid, tgid)
            self.argv0.setdefault((tgid, 0), _proc_argv0(tgid))

    def feed(self, text: str) -> None:
        lines = (self.partial + text).split("\n")
        self.partial = lines.pop()
        for line in lines:
            if line:
                self.line(line)

    def line(self, line: str) -> None:
        if len(self.samples) < SAMPLE_LINES:
            self.samples.append(line)
        at = line.find(SYS_ENTER)
        if at > 0:
            self.syscall(line, at)
            return
        match = LINE.match(line)
        if match is None:
            lost = LOST.search(line)
            if lost:
                self.lost_lines += int(lost.group(1))
            else:
                self.unparsed += 1
            return
        event, body = match["event"], match["body"]
        self.events[event] += 1
        if event == "sched_process_fork":
            fork = FORK.search(body)
            if fork:
                self.set_comm(int(fork["pid"]), fork["comm"])
        elif event == "sched_process_exec":
            self.exec(EXEC.search(body))
        elif event == "task_rename":
            rename = RENAME.search(body)
            if rename:
                self.set_comm(int(rename["pid"]), rename["comm"])

    def set_comm(self, pid: int, comm: str | None) -> None:
        if comm is None:
            self.comm.pop(pid, None)
        else:
            self.comm[pid] = comm
        self.context.pop(pid, None)

    def exec(self, match: re.Match | None) -> None:
        if match is None:
            return
        pid, old = int(match["pid"]), int(match["old"])
        self.set_comm(old, None)
        fd_exec = FD_EXEC.match(match["file"])
        self.set_comm(pid, None if fd_exec else os.path.basename(match["file"])[:COMM_LEN])
        self.tgid[pid] = pid
        self.generation[pid] += 1

    def head(self, head: str) -> tuple[int, str]:
        """(pid, comm as printed) of a line's ``comm-pid (tgid)`` part, which repeats for
        every line of a task: parsed once."""
        match = HEAD.match(head)
        if match is None:
            return -1, ""
        pid = int(match["pid"])
        if match["tgid"] and match["tgid"].isdigit():
            self.tgid.setdefault(pid, int(match["tgid"]))
        who = self.heads[head] = (pid, match["comm"])
        return who

    def where(self, pid: int, printed: str) -> tuple[str, tuple[int, int]]:
        """The comm and process image a task's calls are charged to, until it changes."""
        comm = self.comm.get(pid)
        if comm is None:
            comm = printed if printed != "<...>" else (_proc_comm(pid) or f"<pid {pid}>")
            self.comm[pid] = comm
        tgid = self.tgid.get(pid)
        if tgid is None:
            tgid = self.tgid[pid] = _proc_tgid(pid) or pid
        image = (tgid, self.generation[tgid])
        if image not in self.argv0:
            self.argv0[image] = _proc_argv0(tgid)
        found = self.context[pid] = (comm, image)
        return found

    def syscall(self, line: str, at: int) -> None:
        head = line[:line.rfind(" [", 0, at)]
        who = self.heads.get(head) or self.head(head)
        start = at + len(SYS_ENTER)
        try:
            number = int(line[start:line.find(" ", start)])
        except ValueError:
            number = -1
        if who[0] < 0 or number < 0:
            self.unparsed += 1
            return
        self.syscall_lines += 1
        where = self.context.get(who[0]) or self.where(*who)
        self.calls[(where[0], where[1], number)] += 1

    # -- views

    def numbers(self) -> Counter[int]:
        out: Counter[int] = Counter()
        for (_, _, nr), n in self.calls.items():
            out[nr] += n
        return out

    def by_comm(self) -> dict[str, Counter[int]]:
        out: dict[str, Counter[int]] = {}
        for (comm, _, nr), n in self.calls.items():
            out.setdefault(comm, Counter())[nr] += n
        return out

    def named(self, counts: Counter[int]) -> dict[str, int]:
        return {syscall_name(nr, self.names): n for nr, n in sorted(counts.items())}

    def processes(self) -> list[dict[str, Any]]:
        calls: dict[tuple[int, int], Counter[int]] = {}
        comms: dict[tuple[int, int], set[str]] = {}
        for (comm, image, nr), n in self.calls.items():
            calls.setdefault(image, Counter())[nr] += n
            comms.setdefault(image, set()).add(comm)
        return [{"tgid": tgid, "exec": gen, "comms": sorted(comms[(tgid, gen)]),
                 "argv0": self.argv0.get((tgid, gen)), "distinct": len(counts),
                 "syscalls": self.named(counts)}
                for (tgid, gen), counts in sorted(calls.items())]


# ---- the trace ------------------------------------------------------------------------------

def _safe_label(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label)[:40] or "trace"


def default_buffer_kb() -> int:
    cpus = os.cpu_count() or 1
    return max(1024, min(BUFFER_KB_PER_CPU, BUFFER_KB_TOTAL_MAX // cpus))


class SyscallTrace:
    """Count the host syscalls of ``pids``, their threads and descendants, existing and
    forked while the block runs::

        with SyscallTrace(pids, "runc") as trace:
            pod.exec([...])
            result = trace.result()

    ``result()`` stops tracing (inside the block too, so the block's own teardown is not
    counted); leaving the block removes the instance, also on an exception or Ctrl-C.
    ``follow_existing=False`` writes only the given task ids, leaving the following to the
    kernel (what the tests use to show that it misses threads already running).
    """

    def __init__(self, pids: Iterable[int], label: str = "trace", *,
                 follow_existing: bool = True, buffer_kb: int | None = None):
        self.pids = sorted({int(p) for p in pids})
        if not self.pids:
            raise ValueError("SyscallTrace needs at least one pid")
        self.label = label
        self.follow_existing = follow_existing
        self.buffer_kb = buffer_kb or default_buffer_kb()
        self.names = syscall_table()
        self.mount = TracefsMount()
        self.instance: Path | None = None
        self.traced: set[int] = set()
        self.tally = _Tally(self.names)
        self.stale_removed: list[str] = []
        self._fd: int | None = None
        self._reader: threading.Thread | None = None
        self._stopping = threading.Event()
        self._abort = threading.Event()
        self._read_bytes = 0
        self._read_error: str | None = None
        self._started = 0.0
        self._seconds = 0.0
        self._stats: dict[str, dict[str, int]] = {}
        self._result: SyscallTraceResult | None = None
        self._running = False
        self.instance_removed = False

    # -- control files

    def _write(self, name: str, value: str, append: bool = False) -> None:
        assert self.instance is not None
        flags = os.O_WRONLY | (0 if append else os.O_TRUNC)
        fd = os.open(self.instance / name, flags)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)

    def add_pids(self, pids: Iterable[int]) -> set[int]:
        """Trace these processes too (with their threads and existing descendants); returns
        the tids newly added. Also for a process that appears while tracing runs but is
        not forked by a traced one."""
        roots = {int(p) for p in pids}
        added: set[int] = set()
        for _ in range(TID_ROUNDS):
            if self.follow_existing:
                procs = roots | descendants(roots)
                tids = {t for p in procs for t in task_ids(p)} | procs
            else:
                tids = roots
            new = tids - self.traced
            if not new:
                break
            for tid in new:
                self.tally.seed(tid)
            self._write("set_event_pid", " ".join(map(str, sorted(new))) + "\n",
                        append=bool(self.traced))
            self.traced |= new
            added |= new
        return added

    # -- lifetime

    def __enter__(self) -> SyscallTrace:
        try:
            self._start()
        except BaseException:
            self._teardown()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._teardown()

    def _start(self) -> None:
        root = self.mount.__enter__()
        self.stale_removed = remove_stale_instances(root)
        for _ in range(3):
            name = (f"{INSTANCE_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-"
                    f"{_safe_label(self.label)}")
            try:
                os.mkdir(root / "instances" / name)
            except FileExistsError:
                continue
            self.instance = root / "instances" / name
            break
        else:
            raise UserError(f"cannot create a tracefs instance under {root}/instances")
        self._write("buffer_size_kb", str(self.buffer_kb))
        self._write("options/event-fork", "1")
        self._write("options/record-tgid", "1")
        self.add_pids(self.pids)
        self._fd = os.open(self.instance / "trace_pipe", os.O_RDONLY | os.O_NONBLOCK)
        self._reader = threading.Thread(target=self._drain, daemon=True,
                                        name=f"syscalltrace-{self.label}")
        self._reader.start()
        self._started = time.monotonic()
        self._running = True
        for event in EVENTS:
            self._write(f"events/{event}/enable", "1")

    def _drain(self) -> None:
        quiet = 0
        while not self._abort.is_set():
            try:
                chunk = os.read(self._fd, READ_BYTES)
            except BlockingIOError:
                chunk = None
            except OSError as exc:
                self._read_error = str(exc)
                return
            if chunk:
                quiet = 0
                self._read_bytes += len(chunk)
                self.tally.feed(chunk.decode(errors="replace"))
                continue
            if self._stopping.is_set():
                quiet += 1
                if quiet >= QUIET_READS or chunk == b"":
                    return
            time.sleep(TIMEOUTS.trace_idle)

    def stop(self) -> None:
        """Stop recording, drain what the buffer still holds, read the kernel's counters."""
        if not self._running:
            return
        self._running = False
        self._seconds = time.monotonic() - self._started
        try:
            self._write("tracing_on", "0")
            self._write("events/enable", "0")
        finally:
            self._stopping.set()
            self._join_reader()
        if self.tally.partial:
            self.tally.line(self.tally.partial)
            self.tally.partial = ""
        self._stats = read_stats(self.instance)

    def _join_reader(self) -> None:
        """Wait for the drain to finish; one that cannot keep up is told to stop (between
        two reads) so the pipe is never closed under it, and the result says so."""
        if self._reader is None or not self._reader.is_alive():
            return
        self._reader.join(DRAIN_TIMEOUT)
        if self._reader.is_alive():
            self._abort.set()
            self._reader.join(DRAIN_TIMEOUT)
            self._read_error = f"the pipe was not drained within {DRAIN_TIMEOUT:.0f}s"

    def result(self) -> SyscallTraceResult:
        """The counts (stops the trace first when it still runs)."""
        if self._result is not None:
            return self._result
        self.stop()
        tally = self.tally
        numbers = tally.numbers()
        lost = max(lost_in_stats(self._stats), tally.lost_lines)
        if self._read_error:
            lost = max(lost, 1)
        evidence = {
            "method": "tracefs instance: raw_syscalls/sys_enter, set_event_pid with "
                      "options/event-fork, trace_pipe drained while running",
            "instance": str(self.instance),
            "tracefs": str(self.mount.root),
            "tracefs_mounted_for_trace": self.mount.mounted_by_us,
            "kernel": platform.release(),
            "events": list(EVENTS),
            "buffer_size_kb_per_cpu": self.buffer_kb,
            "pids": self.pids,
            "traced_tids_at_start": sorted(self.traced),
            "per_cpu_stats": self._stats,
            "lost_in_stats": lost_in_stats(self._stats),
            "lost_in_pipe": tally.lost_lines,
            "pipe_bytes": self._read_bytes,
            "event_counts": {"sys_enter": tally.syscall_lines, **tally.events},
            "unparsed_lines": tally.unparsed,
            "read_error": self._read_error,
            "stale_instances_removed": self.stale_removed,
            "sample_lines": tally.samples,
        }
        self._result = SyscallTraceResult(
            label=self.label,
            syscalls={nr: syscall_name(nr, self.names) for nr in sorted(numbers)},
            counts=tally.named(numbers),
            by_comm={c: tally.named(v) for c, v in sorted(tally.by_comm().items())},
            processes=tally.processes(),
            total_events=sum(numbers.values()),
            lost_events=lost,
            seconds=self._seconds,
            evidence=evidence,
        )
        return self._result

    def _teardown(self) -> None:
        """Everything undone in reverse, each step on its own: one failing (or a second
        Ctrl-C arriving) must not leave the instance and its buffer behind."""
        try:
            if self._running:
                try:
                    self.stop()
                except OSError:
                    pass
        finally:
            try:
                self._stopping.set()
                self._join_reader()
            finally:
                self._abort.set()
                try:
                    if self._fd is not None:
                        os.close(self._fd)
                        self._fd = None
                    self._remove_instance()
                finally:
                    self.mount.__exit__()

    def _remove_instance(self) -> None:
        if self.instance is None:
            return
        instance = self.instance

        def gone() -> bool | None:
            try:
                os.rmdir(instance)
            except FileNotFoundError:
                return True
            except OSError as exc:
                if exc.errno == errno.EBUSY:
                    return None
                raise
            return True

        wait_until(gone, REMOVE_TIMEOUT, f"tracefs instance {instance} to be removable",
                   interval=TIMEOUTS.trace_idle)
        self.instance_removed = True
