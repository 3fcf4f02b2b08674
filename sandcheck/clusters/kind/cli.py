"""The kind binary, run bounded against one docker engine (the environment is the engine's:
PATH with Debian's docker CLI first, DOCKER_HOST of the engine; never this process's)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from sandcheck.clusters.kind.layout import is_control_plane
from sandcheck.errors import UserError
from sandcheck.host import command
from sandcheck.provision.paths import path_dir
from sandcheck.timeouts import TIMEOUTS

CLUSTER_PREFIX = "sandcheck-"
"""Clusters the backend creates are ``sandcheck-<run id>`` unless --kind-name says else."""
DEBIAN_CLI_DIR = "/usr/bin"
"""Debian's docker 20.10 CLI: a newer CLI on PATH may speak an API the engine lacks."""
INSTALL_HINT = "run `sandcheck provision --kind` (builds kind and the offline node image)"
KIND_TAIL_LINES = 40
"""kind prints its failing step's whole output (kubeadm's): more of it goes into errors."""


def kind_binary() -> str:
    """The kind `sandcheck provision --kind` built, else PATH's."""
    built = path_dir() / "kind"
    if built.is_file():
        return str(built)
    found = shutil.which("kind")
    if found is None:
        raise UserError(f"kind not found: {INSTALL_HINT}")
    return found


def engine_env(base: dict[str, str]) -> dict[str, str]:
    """``base`` (an engine's environment) with Debian's CLI and sandcheck's tools first."""
    env = dict(base)
    env["PATH"] = os.pathsep.join([DEBIAN_CLI_DIR, str(path_dir()), env.get("PATH", "")])
    return env


class Kind:
    """``kind`` subcommands against the engine whose environment is ``env``."""

    def __init__(self, env: dict[str, str], binary: str | None = None):
        self.env = engine_env(env)
        self.binary = binary or kind_binary()

    def run(self, *args: str, timeout: float = TIMEOUTS.command, check: bool = True
            ) -> subprocess.CompletedProcess:
        return command.run([self.binary, *args], timeout, env=self.env, check=check,
                           what=f"kind {' '.join(args)}", tail_lines=KIND_TAIL_LINES)

    def clusters(self) -> list[str]:
        out = self.run("get", "clusters", timeout=TIMEOUTS.api_call, check=False)
        return [line.strip() for line in out.stdout.splitlines() if line.strip()]

    def nodes(self, name: str) -> list[str]:
        """Node container names of cluster ``name`` (control plane first, then workers)."""
        out = self.run("get", "nodes", "--name", name, timeout=TIMEOUTS.api_call).stdout
        return sorted(out.split(), key=lambda n: (not is_control_plane(n), n))

    def kubeconfig(self, name: str, path: Path) -> None:
        text = self.run("get", "kubeconfig", "--name", name, timeout=TIMEOUTS.api_call).stdout
        path.write_text(text)
        path.chmod(0o600)

    def export_logs(self, name: str, where: Path) -> str:
        """``kind export logs``; what happened, for the failure message."""
        proc = self.run("export", "logs", str(where), "--name", name,
                        timeout=TIMEOUTS.cluster_start, check=False)
        if proc.returncode == 0:
            return f"kind logs exported to {where}"
        return f"kind export logs failed: {(proc.stderr or proc.stdout).strip()[-500:]}"
