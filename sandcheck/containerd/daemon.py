"""A private containerd: own root, state, socket and config under a sandcheck work dir.

Never the host's /etc/containerd or /run/containerd. Used by ``verify`` (is each handler
in containerd's effective CRI config?) and by the node backend (pods over CRI).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import tomlkit

from sandcheck.errors import ComponentError, UserError
from sandcheck.host import runcgroups
from sandcheck.host.daemon import Daemon
from sandcheck.host.workdir import delete_tree
from sandcheck.provision.paths import path_dir
from sandcheck.timeouts import TIMEOUTS


def find_binary(name: str, hint: str, path: str | None = None) -> str:
    exe = shutil.which(name, path=path)
    if exe is None:
        raise UserError(f"{name} not found on PATH: {hint}")
    return exe


class PrivateContainerd(Daemon):
    """Start/stop a containerd whose every path lives under ``workdir``.

    The user's config is copied, never edited: root, state and every listening
    address are overridden so the copy cannot collide with a containerd already
    serving the host.

    With ``cgroup`` (a run's cgroup tree), containerd runs in ``<cgroup>/containerd``, so
    its shims and whatever they start are born inside the tree, and the node's pods can be
    put below it (CRI's cgroup_parent): stop() then kills every process in the tree, which
    needs neither a live containerd nor a command line naming the work dir.
    """

    def __init__(self, doc: tomlkit.TOMLDocument, workdir: Path, binary: str = "containerd",
                 config_origin: Path | None = None, extra_path: list[str] | None = None,
                 pending: dict[Path, str] | None = None, cgroup: str | None = None):
        self.extra_path = list(dict.fromkeys([*(extra_path or []), str(path_dir())]))
        self.binary = find_binary(binary, "install containerd (apt-get install containerd) "
                                  "or run `sandcheck provision`", path=self.env()["PATH"])
        self.workdir = Path(workdir)
        self.root = self.workdir / "root"
        self.state = self.workdir / "state"
        self.socket = self.workdir / "containerd.sock"
        self.config_path = self.workdir / "config.toml"
        self.log_path = self.workdir / "containerd.log"
        self.doc = _privatized(doc, self)
        self.imports = _private_imports(doc, self, config_origin, pending)
        """Privatized copies of every imported file, in containerd's order (name -> doc)."""
        self.proc: subprocess.Popen | None = None
        self.cgroup = cgroup
        self.name = f"containerd ({self.binary})"

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket}"

    def env(self) -> dict[str, str]:
        """containerd finds shims on its PATH; put sandcheck's tool dirs first."""
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join([*self.extra_path, env.get("PATH", "/usr/bin:/bin")])
        return env

    def start(self, timeout: float = TIMEOUTS.daemon_start) -> PrivateContainerd:
        for d in (self.root, self.state):
            d.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(tomlkit.dumps(self.doc))
        for name, imported in self.imports:
            (self.workdir / name).write_text(tomlkit.dumps(imported))
        # Joins the run's tree before it serves: containerd has started nothing yet, so
        # all it starts later is born in the tree.
        self.spawn([self.binary, "--config", str(self.config_path), "--root", str(self.root),
                    "--state", str(self.state), "--address", str(self.socket)], self.env(),
                   cgroup=None if self.cgroup is None else f"{self.cgroup}/containerd")
        self.await_serving(self._serving, timeout, f"{self.name} to serve CRI (config "
                           f"{self.config_path})")
        return self

    def _serving(self) -> bool | None:
        """True once CRI answers; raises when CRI failed to load."""
        if self.socket.exists() and self._cri_ready():
            return True
        failed = self._cri_load_failure()
        if failed:
            raise ComponentError(f"containerd's CRI plugin did not load: {failed}\n"
                                 f"log tail:\n{self.log_tail()}")
        return None

    def _cri_load_failure(self) -> str | None:
        try:
            log = self.log_path.read_text(errors="replace")
        except OSError:
            return None
        for line in log.splitlines():
            if "failed to load plugin" in line and "cri" in line and "error=" in line:
                return line.split("error=", 1)[1].strip()
        return None

    def _cri_ready(self) -> bool:
        try:
            self.cri_info()
            return True
        except (ComponentError, subprocess.TimeoutExpired):
            return False

    def crictl(self, *args: str, timeout: float = TIMEOUTS.command, check: bool = True):
        crictl = find_binary("crictl", "run `sandcheck provision` (it builds crictl from "
                             "sigs.k8s.io/cri-tools)", path=self.env()["PATH"])
        config = self.workdir / "crictl.yaml"
        if not config.exists():
            config.parent.mkdir(parents=True, exist_ok=True)
            config.write_text(f"runtime-endpoint: {self.endpoint}\nimage-endpoint: "
                              f"{self.endpoint}\ntimeout: {int(timeout)}\n")
        argv = [crictl, "--config", str(config), "--timeout", f"{int(timeout)}s", *args]
        proc = subprocess.run(argv, capture_output=True, text=True,
                              timeout=timeout + TIMEOUTS.crictl_margin, env=self.env())
        if check and proc.returncode != 0:
            raise ComponentError(
                f"crictl {' '.join(args)} failed ({proc.returncode}): "
                f"{(proc.stderr or proc.stdout).strip()}"
            )
        return proc

    def cri_info(self) -> dict[str, Any]:
        return json.loads(self.crictl("info", timeout=TIMEOUTS.api_call).stdout)

    def effective_runtimes(self) -> dict[str, dict[str, Any]]:
        """Handler -> the runtime config CRI is actually using (from `crictl info`)."""
        info = self.cri_info()
        config = info.get("config") or {}
        runtimes = (config.get("containerd") or {}).get("runtimes") or {}
        if not runtimes and "runtimes" in config:
            runtimes = config["runtimes"]
        return runtimes

    def stop(self) -> list[str]:
        """Stop containerd (by its pid, with a grace period), then every process in its
        cgroup tree (shims, sandboxes, pods) and the tree itself, then unmount and delete
        the work dir. Returns what was done beyond stopping containerd."""
        self.stop_process()
        done = [] if self.cgroup is None else runcgroups.release(self.cgroup)
        delete_tree(self.workdir)
        return done


def _privatized(doc: tomlkit.TOMLDocument, daemon: PrivateContainerd
                ) -> tomlkit.TOMLDocument:
    """A copy of ``doc`` whose paths and listeners cannot touch the host's containerd."""
    copy = tomlkit.parse(tomlkit.dumps(doc))
    for key in ("root", "state"):
        copy.pop(key, None)
    for section in ("grpc", "ttrpc", "debug", "metrics"):
        table = copy.get(section)
        if table is not None and "address" in table:
            table["address"] = str(daemon.socket) if section == "grpc" else ""
    if "debug" in copy and copy["debug"].get("address") == "":
        del copy["debug"]["address"]
    if "imports" in copy:
        copy["imports"] = []
    plugins = copy.setdefault("plugins", tomlkit.table(True))
    plugins.setdefault("io.containerd.internal.v1.opt", tomlkit.table())["path"] = str(
        daemon.workdir / "opt")
    cri = plugins.get("io.containerd.grpc.v1.cri")
    if cri is not None:
        cri["stream_server_address"] = "127.0.0.1"
        cri["stream_server_port"] = "0"
    return copy


def _private_imports(doc: tomlkit.TOMLDocument, daemon: PrivateContainerd,
                     origin: Path | None, pending: dict[Path, str] | None
                     ) -> list[tuple[str, tomlkit.TOMLDocument]]:
    """Every file ``doc`` imports (globs and nested imports resolved as containerd does,
    relative to ``origin``), each privatized like the main file: an import may set
    addresses or replace the CRI section, and containerd applies it after the main file.
    The private main file imports these copies, in the same order."""
    from sandcheck.containerd import config as cc
    from sandcheck.containerd import imports as ci

    if not doc.get("imports"):
        return []
    origin = Path(origin) if origin is not None else Path.cwd() / "config.toml"
    files = ci.resolve(origin, tomlkit.dumps(doc), pending)[1:]
    copies = [(f"import-{i:02d}-{f.path.name}", _privatized(cc.parse(f.text, str(f.path)), daemon))
              for i, f in enumerate(files)]
    daemon.doc["imports"] = [str(daemon.workdir / name) for name, _ in copies]
    return copies
