"""The events a syscall trace enables and how their lines read in trace_pipe.

The format is the kernel's text output, which it does not promise to keep: one place to
change when a kernel prints it differently (tests/test_syscalltrace.py shows when; as
verified on Linux 6.18).
"""

from __future__ import annotations

import re

EVENTS = ("raw_syscalls/sys_enter", "sched/sched_process_fork", "sched/sched_process_exec",
          "task/task_rename")
"""sys_enter is the count; the other three keep a tid -> comm map exact at event time
(the comm the kernel prints is looked up at read time in a small global cache, which
reports ``<...>`` once other tasks have pushed the entry out)."""

HEAD_PATTERN = r"^\s*(?P<comm>.*)-(?P<pid>\d+)(?:\s+\(\s*(?P<tgid>[-\d]+)\))?"
HEAD = re.compile(HEAD_PATTERN + r"\s*$")
"""A line's ``comm-pid (tgid)`` part (the tgid with options/record-tgid)."""
LINE = re.compile(HEAD_PATTERN + r"\s+\[\d+\]\s+(?:\S+\s+)?\d+\.\d+:\s+(?P<event>\w+):\s?"
                  r"(?P<body>.*)$")
SYS_ENTER = ": sys_enter: NR "
"""Found with str.find rather than LINE: most lines are sys_enter, and the reader must
keep up with the kernel."""
LOST = re.compile(r"CPU:\d+ \[LOST (\d+) EVENTS\]")
FORK = re.compile(r"child_comm=(?P<comm>.*) child_pid=(?P<pid>\d+)$")
EXEC = re.compile(r"filename=(?P<file>.*) pid=(?P<pid>\d+) old_pid=(?P<old>\d+)$")
RENAME = re.compile(r"^pid=(?P<pid>\d+) oldcomm=.* newcomm=(?P<comm>.*) oom_score_adj=-?\d+$")
