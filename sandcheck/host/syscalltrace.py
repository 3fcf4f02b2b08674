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

Each trace has its own instance (sandcheck.host.trace.tracefs). The buffer is drained
while the workload runs (sandcheck.host.trace.reader); the kernel's own overrun and drop
counters come back with the result, which says whether it is complete.

Names come from the x86_64 table (``syscalls.syscall_table``): a 32-bit task's calls carry ia32
numbers that the tracepoint does not tell apart, so they would be misnamed.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandcheck.host.syscalls import syscall_name, syscall_table
from sandcheck.host.trace.events import EVENTS
from sandcheck.host.trace.reader import PipeReader
from sandcheck.host.trace.tally import _Tally
from sandcheck.host.trace.tasks import descendants, task_ids
from sandcheck.host.trace.tracefs import (
    TracefsMount,
    create_instance,
    lost_in_stats,
    read_stats,
    remove_instance,
    remove_stale_instances,
    write_control,
)

BUFFER_KB_PER_CPU = 8192
BUFFER_KB_TOTAL_MAX = 65536
"""An entry is about 72 bytes: 8 MiB per CPU holds over 100k calls while the reader
catches up, and a many-core host is capped at 64 MiB in all."""
TID_ROUNDS = 10
"""Rounds of adding tids until a round finds none new: a thread that an untraced
pre-existing thread starts while the first round is written is found in the next one."""


def unavailable() -> str | None:
    """Why this host cannot trace syscalls (None when it can)."""
    if os.geteuid() != 0:
        return "tracing host syscalls needs root (tracefs and CAP_SYS_ADMIN)"
    if not Path("/sys/kernel/tracing").is_dir() and not Path("/sys/kernel/debug").is_dir():
        return "the kernel has no tracefs (CONFIG_FTRACE off)"
    return None


def default_buffer_kb() -> int:
    cpus = os.cpu_count() or 1
    return max(1024, min(BUFFER_KB_PER_CPU, BUFFER_KB_TOTAL_MAX // cpus))


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


# ---- the trace ------------------------------------------------------------------------------

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
        self.reader = PipeReader(self.tally.feed)
        self.stale_removed: list[str] = []
        self._started = 0.0
        self._seconds = 0.0
        self._stats: dict[str, dict[str, int]] = {}
        self._result: SyscallTraceResult | None = None
        self._running = False
        self.instance_removed = False

    def _write(self, name: str, value: str, append: bool = False) -> None:
        assert self.instance is not None
        write_control(self.instance, name, value, append)

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
        self.instance = create_instance(root, self.label)
        self._write("buffer_size_kb", str(self.buffer_kb))
        self._write("options/event-fork", "1")
        self._write("options/record-tgid", "1")
        self.add_pids(self.pids)
        self.reader.start(self.instance / "trace_pipe", f"syscalltrace-{self.label}")
        self._started = time.monotonic()
        self._running = True
        for event in EVENTS:
            self._write(f"events/{event}/enable", "1")

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
            self.reader.finish()
        self.tally.flush()
        self._stats = read_stats(self.instance)

    def result(self) -> SyscallTraceResult:
        """The counts (stops the trace first when it still runs)."""
        if self._result is not None:
            return self._result
        self.stop()
        tally = self.tally
        numbers = tally.numbers()
        lost = max(lost_in_stats(self._stats), tally.lost_lines)
        if self.reader.error:
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
            "pipe_bytes": self.reader.bytes,
            "event_counts": {"sys_enter": tally.syscall_lines, **tally.events},
            "unparsed_lines": tally.unparsed,
            "read_error": self.reader.error,
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
                self.reader.finish()
            finally:
                try:
                    self.reader.close()
                    self._remove_instance()
                finally:
                    self.mount.__exit__()

    def _remove_instance(self) -> None:
        if self.instance is None:
            return
        remove_instance(self.instance)
        self.instance_removed = True
