"""One cluster daemon (etcd, an API server, kubelet, ...): its process, its log, and the
wait for it to answer. A daemon that exits while awaited ends the wait at once, with its
log tail, instead of letting the wait run out."""

from __future__ import annotations

import socket
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sandcheck.host.daemon import Daemon
from sandcheck.timeouts import TIMEOUTS, wait_until


def free_port(address: str) -> int:
    """A TCP port free on ``address`` now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return s.getsockname()[1]


@dataclass
class Component(Daemon):
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
        self.spawn(self.argv, self.env, cgroup=self.cgroup, header=True)

    def stop(self, grace: float = TIMEOUTS.component_stop) -> None:
        self.stop_process(grace)

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
                                 f"{self.log_tail()}")
