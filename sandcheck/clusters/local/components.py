"""One cluster daemon (etcd, an API server, kubelet, ...): its process, its log, and the
wait for it to answer. A daemon that exits while awaited ends the wait at once, with its
log tail, instead of letting the wait run out."""

from __future__ import annotations

import shlex
import socket
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sandcheck.errors import ComponentError
from sandcheck.host import proc as hostproc
from sandcheck.host import runcgroups
from sandcheck.timeouts import TIMEOUTS, wait_until

LOG_TAIL = 40
"""Log lines that go into an error or a report."""


def free_port(address: str) -> int:
    """A TCP port free on ``address`` now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return s.getsockname()[1]


@dataclass
class Component:
    """One daemon: argv, log file, process."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    cgroup: str | None = None
    """The run's cgroup the daemon is moved into at once (what it starts is born there
    too), so teardown and cleanup find it without matching its command line."""
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(("# " + " ".join(shlex.quote(a) for a in self.argv) + "\n").encode())
            log.flush()
            # A session of its own: Ctrl-C reaches pytest, whose finalizers stop it in order.
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL, env=self.env,
                                         start_new_session=True)
        if self.cgroup is not None:
            runcgroups.join(self.cgroup, self.proc.pid)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check(self) -> None:
        """Raise ComponentError, with the log tail, when the process has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise ComponentError(f"{self.name} exited with {self.proc.returncode}; "
                                 f"log {self.log_path}, tail:\n{self.tail()}")

    def tail(self, lines: int = LOG_TAIL) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(line[:600] for line in text.splitlines()[-lines:])

    def stop(self, grace: float = TIMEOUTS.component_stop) -> None:
        if self.alive():
            hostproc.kill_all([self.proc.pid], grace=grace)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=TIMEOUTS.kill_grace)
            except subprocess.TimeoutExpired:
                pass

    def wait_http(self, url: str, timeout: float, ok: Callable[[str], bool],
                  ssl_context: ssl.SSLContext | None = None) -> None:
        """Until GET ``url`` answers 200 with a body ``ok`` accepts."""
        last = ["no answer yet"]

        def answered() -> bool | None:
            self.check()
            try:
                with urllib.request.urlopen(url, timeout=TIMEOUTS.api_call,
                                            context=ssl_context) as resp:
                    body = resp.read().decode(errors="replace")
                    if resp.status == 200 and ok(body):
                        return True
                    last[0] = f"{resp.status} {body[:200]}"
            except urllib.error.HTTPError as exc:
                last[0] = f"{exc.code} {exc.read()[:300].decode(errors='replace')}"
            except (OSError, ssl.SSLError) as exc:
                last[0] = str(exc)
            return None

        wait_until(answered, timeout, f"{self.name} to answer at {url}",
                   interval=TIMEOUTS.ready_poll,
                   state=lambda: f"last answer: {last[0]}; log {self.log_path}, tail:\n"
                                 f"{self.tail()}")
