"""Runtimes added to running kind nodes: one step for sandcheck's plain node image and for
a user's (the official kindest/node), since neither holds more than runc.

Per node: the runtime binaries it lacks are copied in (with the shared libraries the node
lacks, e.g. Debian's crun needs libyajl), its config.toml gets the handlers through the
patcher, runsc.toml and friends are written beside it, kind's cgroup v1 self-bind-mounts
are undone, containerd restarts when anything changed, and the handlers must then show in
containerd's effective CRI config (``crictl info``) before any pod is made.

Why the bind mounts go: on cgroup v1 kind's entrypoint bind-mounts ``/kubelet`` and
``/kubelet.slice`` of every hierarchy onto themselves. runsc finds its own cgroup from
/proc/self/cgroup and /proc/self/mountinfo, and takes every cgroup mount whose root is not
``/`` as the one its path is relative to: after ``/kubelet`` it holds
``../system.slice/containerd.service``, and ``/kubelet.slice`` then fails with
``Rel: can't make ../system.slice/containerd.service relative to /kubelet.slice``
(runsc/cgroup/cgroup.go loadPathsHelper), so every runsc pod fails. kubelet uses the
systemd driver here, for which ``kubelet.slice`` is a unit systemd keeps anyway.
"""

from __future__ import annotations

import json
import re
import subprocess
from typing import Protocol

from sandcheck.catalog import Runtime
from sandcheck.clusters.kind import nodeconfig
from sandcheck.errors import ComponentError
from sandcheck.progress import Progress, quiet
from sandcheck.provision.paths import which
from sandcheck.provision.preconditions import try_precondition
from sandcheck.timeouts import TIMEOUTS, wait_until

BIN_DIR = "/usr/local/bin"
LIB_DIR = "/usr/local/lib"
CRI_ENDPOINT = "unix:///run/containerd/containerd.sock"
UNDO_CGROUP_BINDS = """\
[ -f /sys/fs/cgroup/cgroup.controllers ] && exit 0
for m in /sys/fs/cgroup/*/kubelet /sys/fs/cgroup/*/kubelet.slice; do
  while mountpoint -q "$m"; do umount "$m" || break; echo "$m"; done
done
"""
_NOT_FOUND = re.compile(r"^\s*(\S+) => not found", re.M)
_RESOLVED = re.compile(r"^\s*(\S+) => (/\S+)", re.M)


def host_lacks(rt: Runtime) -> str | None:
    """Why ``rt`` cannot be put into nodes from this host (None: its binaries are here and
    its host precondition holds: the nodes share this host's kernel and /dev/kvm)."""
    absent = [name for name in rt.binaries if which(name) is None]
    if absent and rt.unavailable:
        return rt.unavailable
    if absent:
        return (f"{', '.join(absent)} not found on this host, so not copied into the kind "
                f"nodes: run `sandcheck provision --runtimes {rt.name}`")
    outcome = try_precondition(rt)
    if outcome is not None and not outcome.holds:
        return outcome.reason
    return None


class Engine(Protocol):
    def docker(self, *args: str, timeout: float = TIMEOUTS.command, check: bool = True,
               input: str | None = None) -> subprocess.CompletedProcess: ...


class NodeInstaller:
    """Install ``runtimes`` into node container ``node`` of ``engine``."""

    def __init__(self, engine: Engine, node: str, progress: Progress = quiet):
        self.engine = engine
        self.node = node
        self.progress = progress
        self.changed: list[str] = []

    def sh(self, script: str, check: bool = True, input: str | None = None,
           timeout: float = TIMEOUTS.command) -> subprocess.CompletedProcess:
        return self.engine.docker("exec", *(["-i"] if input is not None else []), self.node,
                                  "sh", "-c", script, check=check, input=input,
                                  timeout=timeout)

    def install(self, runtimes: list[Runtime]) -> list[str]:
        """Everything above; returns what was done (empty: the node had it all)."""
        self.changed = []
        for rt in runtimes:
            for binary in rt.binaries:
                self._binary(binary)
        self._config(runtimes)
        undone = self.sh(UNDO_CGROUP_BINDS).stdout.split()
        if undone:
            self.changed.append(f"unmounted kind's cgroup v1 self-bind-mounts of /kubelet and "
                                f"/kubelet.slice ({len(undone)} mounts)")
        if self.changed:
            self.sh("systemctl restart containerd", timeout=TIMEOUTS.daemon_start)
        self.verify([rt.handler for rt in runtimes])
        return list(self.changed)

    def _binary(self, name: str) -> None:
        if self.sh(f"command -v {name}", check=False).returncode == 0:
            return
        host = which(name)
        if host is None:
            raise ComponentError(f"{name} is needed on kind node {self.node} but not on this "
                                 "host: run `sandcheck provision`")
        self.engine.docker("cp", "-L", host, f"{self.node}:{BIN_DIR}/{name}")
        self.changed.append(f"copied {host} to {BIN_DIR}/{name}")
        self._libraries(name, host)

    def _libraries(self, name: str, host: str) -> None:
        """Shared libraries the node lacks for ``name``, copied from this host."""
        missing = _NOT_FOUND.findall(self.sh(f"ldd {BIN_DIR}/{name} || true").stdout)
        if not missing:
            return
        ldd = subprocess.run(["ldd", host], capture_output=True, text=True,
                             timeout=TIMEOUTS.tool_query)
        ours = dict(_RESOLVED.findall(ldd.stdout))
        for lib in missing:
            if lib not in ours:
                raise ComponentError(f"{name} on kind node {self.node} needs {lib}, which "
                                     "this host lacks too")
            self.engine.docker("cp", "-L", ours[lib], f"{self.node}:{LIB_DIR}/{lib}")
            self.changed.append(f"copied {ours[lib]} to {LIB_DIR}/{lib}")
        self.sh("ldconfig")
        still = _NOT_FOUND.findall(self.sh(f"ldd {BIN_DIR}/{name} || true").stdout)
        if still:
            raise ComponentError(f"{name} on kind node {self.node} still lacks {still}")

    def _config(self, runtimes: list[Runtime]) -> None:
        current = self.sh(f"cat {nodeconfig.CONFIG_PATH}").stdout
        text, report = nodeconfig.patched(current, runtimes)
        for name, content in report.files.items():
            path = f"{nodeconfig.CONFIG_DIR}/{name}"
            if self.sh(f"cat {path} 2>/dev/null || true").stdout != content:
                self._write(path, content)
                self.changed.append(f"wrote {path}")
        if text != current:
            self._write(nodeconfig.CONFIG_PATH, text)
            self.changed.extend(f"config.toml: {line}" for line in report.lines())

    def _write(self, path: str, content: str) -> None:
        """Atomically: a reader (containerd starting) never sees half a file."""
        self.sh(f'cat >"{path}.sandcheck" && mv "{path}.sandcheck" "{path}"', input=content)

    def effective_handlers(self) -> list[str] | None:
        proc = self.sh(f"crictl --runtime-endpoint {CRI_ENDPOINT} info", check=False,
                       timeout=TIMEOUTS.api_call)
        if proc.returncode != 0:
            return None
        try:
            info = json.loads(proc.stdout)
        except ValueError:
            return None
        return sorted(((info.get("config") or {}).get("containerd") or {})
                      .get("runtimes") or {})

    def verify(self, handlers: list[str]) -> None:
        """containerd serves CRI with every handler in its effective config."""
        last: dict[str, object] = {}

        def ready() -> bool | None:
            found = self.effective_handlers()
            last["found"] = found
            return True if found is not None and set(handlers) <= set(found) else None

        wait_until(ready, TIMEOUTS.daemon_start,
                   f"containerd on kind node {self.node} to serve handlers {handlers}",
                   interval=TIMEOUTS.ready_poll,
                   state=lambda: f"effective handlers: {last.get('found')}\n"
                   + self.sh("journalctl -u containerd --no-pager -n 30", check=False).stdout)

