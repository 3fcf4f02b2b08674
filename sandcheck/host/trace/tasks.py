"""What /proc says of the tasks a trace follows: the threads of a process, the processes
below it, and a task's comm, thread group and argv0 when no event has told them.

A trace needs these at its start (every thread running then is added by its tid) and
for a task whose first line names it ``<...>``; everything here reads /proc once and
treats a task that is gone as a missing answer, never as an error.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable


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


def proc_comm(tid: int) -> str | None:
    """The task's comm now (None when it is gone)."""
    text = _read(f"/proc/{tid}/comm")
    return text.rstrip("\n") if text else None


def proc_tgid(tid: int) -> int | None:
    """The task's thread group (its process), None when it is gone."""
    match = re.search(r"^Tgid:\s+(\d+)$", _read(f"/proc/{tid}/status") or "", re.MULTILINE)
    return int(match.group(1)) if match else None


def proc_argv0(pid: int) -> str | None:
    """The process's argv[0] now (None when it is gone or has none)."""
    text = _read(f"/proc/{pid}/cmdline")
    return text.split("\0", 1)[0] if text else None
