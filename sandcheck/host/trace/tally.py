"""trace_pipe text folded into syscall counts as it arrives.

A trace's lines come faster than any later pass could keep, so each one is charged at
once to the comm and process image of its moment (sandcheck.host.trace.comms) and only
the counts are kept; the views below turn them into what a result reports.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from sandcheck.host.syscalls import syscall_name
from sandcheck.host.trace.comms import CommTracker
from sandcheck.host.trace.events import EXEC, FORK, HEAD, LINE, LOST, RENAME, SYS_ENTER

SAMPLE_LINES = 12


class _Tally(CommTracker):
    """Folds trace_pipe lines into counts as they arrive, in the kernel's order (so a
    call is charged to the comm and process image of its moment). A sys_enter line costs
    two dict lookups and one counter: the reader must keep up with the kernel."""

    def __init__(self, names: dict[int, str]):
        super().__init__()
        self.names = names
        self.calls: Counter[tuple[str, tuple[int, int], int]] = Counter()
        """(comm, (tgid, exec generation), syscall number) -> calls."""
        self.heads: dict[str, tuple[int, str]] = {}
        self.events: Counter[str] = Counter()
        self.syscall_lines = 0
        self.lost_lines = 0
        self.unparsed = 0
        self.samples: list[str] = []
        self.partial = ""

    def feed(self, text: str) -> None:
        lines = (self.partial + text).split("\n")
        self.partial = lines.pop()
        for line in lines:
            if line:
                self.line(line)

    def flush(self) -> None:
        """The last line, which no newline ended (the pipe is drained)."""
        if self.partial:
            self.line(self.partial)
            self.partial = ""

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
