"""Which name and which process image each traced task has at each moment of a trace.

The comm the kernel prints in a trace_pipe line is looked up when the line is read, not
when the call was made, so a task that forked, exec'd or renamed itself since would be
charged under the wrong name. The fork, exec and rename events arrive in the kernel's
order with the calls; folding them here keeps the name and the image (thread group and
exec generation) right for every call in between.
"""

from __future__ import annotations

import os
import re
from collections import Counter

from sandcheck.host.trace.tasks import proc_argv0, proc_comm, proc_tgid

FD_EXEC = re.compile(r"^/(dev|proc/self)/fd/\d+")
"""An exec through a file descriptor (execveat, fexecve) names the task after the file's
dentry, which the exec event does not carry."""
COMM_LEN = 15


class CommTracker:
    """tid -> comm, tid -> thread group, and each process image's argv0, kept from /proc
    at the start and from events after it."""

    def __init__(self) -> None:
        self.context: dict[int, tuple[str, tuple[int, int]]] = {}
        """tid -> (comm, image) its calls are charged to, until an event changes it."""
        self.argv0: dict[tuple[int, int], str | None] = {}
        self.generation: Counter[int] = Counter()
        self.comm: dict[int, str] = {}
        self.tgid: dict[int, int] = {}

    def seed(self, tid: int) -> None:
        """What /proc says of a task traced from the start (later ones come by event)."""
        comm = proc_comm(tid)
        if comm is not None:
            self.comm.setdefault(tid, comm)
        tgid = proc_tgid(tid)
        if tgid is not None:
            self.tgid.setdefault(tid, tgid)
            self.argv0.setdefault((tgid, 0), proc_argv0(tgid))

    def set_comm(self, pid: int, comm: str | None) -> None:
        if comm is None:
            self.comm.pop(pid, None)
        else:
            self.comm[pid] = comm
        self.context.pop(pid, None)

    def exec(self, match: re.Match | None) -> None:
        """A sched_process_exec event: a new image of the process, named after its file."""
        if match is None:
            return
        pid, old = int(match["pid"]), int(match["old"])
        self.set_comm(old, None)
        fd_exec = FD_EXEC.match(match["file"])
        self.set_comm(pid, None if fd_exec else os.path.basename(match["file"])[:COMM_LEN])
        self.tgid[pid] = pid
        self.generation[pid] += 1

    def where(self, pid: int, printed: str) -> tuple[str, tuple[int, int]]:
        """The comm and process image a task's calls are charged to, until it changes."""
        comm = self.comm.get(pid)
        if comm is None:
            comm = printed if printed != "<...>" else (proc_comm(pid) or f"<pid {pid}>")
            self.comm[pid] = comm
        tgid = self.tgid.get(pid)
        if tgid is None:
            tgid = self.tgid[pid] = proc_tgid(pid) or pid
        image = (tgid, self.generation[tgid])
        if image not in self.argv0:
            self.argv0[image] = proc_argv0(tgid)
        found = self.context[pid] = (comm, image)
        return found
