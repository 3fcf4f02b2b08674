"""A daemon a run starts: one process in a session of its own, its log, the wait for it
to serve, and its stop. containerd, dockerd, the registry and a local cluster's
components all go through this one lifecycle, so each is started, watched and stopped
the same way, and a daemon that exits is reported with its name, exit status and log:
from its start to its stop, every wait of the run watches it (sandcheck.timeouts).
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from sandcheck import timeouts
from sandcheck.errors import ComponentError
from sandcheck.host import proc as hostproc
from sandcheck.host import runcgroups
from sandcheck.host.files import tail
from sandcheck.timeouts import TIMEOUTS, wait_until

T = TypeVar("T")
LOG_TAIL = 40
"""Log lines that go into an error or a report."""
LINE_CHARS = 600
"""A log line longer than this is cut in a message (kubelet writes whole objects)."""


class DaemonExited(ComponentError):
    """A daemon of the run is no longer running: its name, exit status and log tail."""


class Daemon:
    """The process half of a daemon; a subclass says what to run and when it serves.

    A subclass sets ``name`` (it names the daemon in every message), ``log_path`` (where
    its output goes) and ``proc = None`` before it spawns, and a ``start()`` that spawns
    and awaits serving (the context manager calls it).
    """

    name: str
    log_path: Path
    proc: subprocess.Popen | None

    def spawn(self, argv: Sequence[str], env: Mapping[str, str] | None = None, *,
              cgroup: str | None = None, born_in_cgroup: bool = False,
              header: bool = False) -> None:
        """Start ``argv`` with its output in the log. A session of its own: Ctrl-C reaches
        pytest, whose finalizers stop it in order. With ``cgroup`` the process joins the
        run's cgroup before it starts anything (``born_in_cgroup``: before it execs, for
        a daemon that starts children at once, as dockerd starts containerd)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        enter = runcgroups.entering(cgroup) if cgroup and born_in_cgroup else None
        with open(self.log_path, "ab") as log:
            if header:
                log.write(("# " + " ".join(shlex.quote(a) for a in argv) + "\n").encode())
                log.flush()
            self.proc = subprocess.Popen(list(argv), stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL,
                                         env=dict(env) if env is not None else None,
                                         start_new_session=True, preexec_fn=enter)
        if cgroup and not born_in_cgroup:
            try:
                runcgroups.join(cgroup, self.proc.pid)
            except BaseException:
                self.stop_process()
                raise
        timeouts.watch(self, self.exit_error)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_error(self) -> DaemonExited | None:
        """The error that says this daemon exited, or None while it runs (or never ran)."""
        if self.proc is None or self.proc.poll() is None:
            return None
        return DaemonExited(f"{self.name} exited with {self.proc.returncode}; "
                            f"log {self.log_path}, tail:\n{self.log_tail()}")

    def check(self) -> None:
        """Raise DaemonExited when the process has exited."""
        if (error := self.exit_error()) is not None:
            raise error

    def log_tail(self, lines: int = LOG_TAIL) -> str:
        return "\n".join(line[:LINE_CHARS] for line in tail(self.log_path, lines).splitlines())

    def await_serving(self, probe: Callable[[], T | None], timeout: float, what: str, *,
                      interval: float = TIMEOUTS.ready_poll,
                      state: Callable[[], str] | None = None) -> T:
        """Wait for ``probe``; the daemon exiting ends the wait at once. On any failure
        (or Ctrl-C) the daemon is stopped before the error goes on."""
        def serving() -> T | None:
            self.check()
            return probe()

        try:
            return wait_until(serving, timeout, what, interval=interval,
                              state=state or (lambda: "log tail:\n" + self.log_tail()))
        except BaseException:
            self.stop()
            raise

    def stop_process(self, grace: float = TIMEOUTS.component_stop) -> None:
        """SIGTERM, SIGKILL after ``grace``, then reap; safe when it already exited."""
        timeouts.unwatch(self)
        if self.alive():
            hostproc.kill_all([self.proc.pid], grace=grace)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=TIMEOUTS.kill_grace)
            except subprocess.TimeoutExpired:
                pass

    def stop(self):
        """The daemon and what it left (a subclass adds cgroups, work dirs, host state)."""
        self.stop_process()

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
