"""``containerd-config --apply``: change a running node's containerd config, or leave it
as it was.

Back up, write atomically, restart containerd, wait until CRI answers, check every handler
in the effective CRI config, start one pod per handler. Any failure after the write puts
the backups back, restarts again and proves the old config is in effect (CRI's effective
config equal to the one read before the change). Checks that need nothing written (CRI
answers, the sandbox image is present) run first, so a node that cannot be checked is never
touched.
"""

from __future__ import annotations

import difflib
import json
import shlex
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandcheck.catalog import Runtime
from sandcheck.containerd.images import import_archive
from sandcheck.errors import UserError
from sandcheck.host.files import atomic_write, backup
from sandcheck.timeouts import TIMEOUTS, WaitTimeout, wait_until

APPLY_LABEL = "sandcheck.apply"
"""Label of the check pods (``sandcheck cleanup`` and a reader of ``crictl pods`` know them)."""


class StepFailed(Exception):
    """One step of the apply failed; the message is the reason the user reads."""


def default_restart_command() -> list[str]:
    """systemd's restart where systemd is PID 1; otherwise the user must say how."""
    try:
        init = Path("/proc/1/comm").read_text().strip()
    except OSError:
        init = "?"
    if init == "systemd":
        return ["systemctl", "restart", "containerd"]
    raise UserError(f"PID 1 is {init!r}, not systemd: say how this node restarts containerd "
                    "with --restart-command CMD")


@dataclass
class Node:
    """The node's containerd as the apply sees it: its CRI socket and how to restart it."""

    address: str
    restart_command: list[str]
    crictl: str = "crictl"
    ctr: str = "ctr"
    image_archive: Path | None = None
    say: Callable[[str], None] = print

    @property
    def endpoint(self) -> str:
        return self.address if "://" in self.address else f"unix://{self.address}"

    def crictl_run(self, *args: str, timeout: float = TIMEOUTS.api_call
                   ) -> subprocess.CompletedProcess:
        argv = [self.crictl, "--runtime-endpoint", self.endpoint, "--image-endpoint",
                self.endpoint, "--timeout", f"{int(timeout)}s", *args]
        try:
            return subprocess.run(argv, capture_output=True, text=True,
                                  timeout=timeout + TIMEOUTS.crictl_margin)
        except FileNotFoundError:
            raise UserError(f"{self.crictl} not found: run `sandcheck provision` (it builds "
                            "crictl) or put crictl on PATH") from None
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(argv, 124, "", f"timed out after {timeout}s")

    def cri_config(self) -> dict[str, Any] | None:
        """CRI's effective config (``crictl info``), or None while CRI does not answer."""
        socket = self.endpoint.removeprefix("unix://")
        if self.endpoint.startswith("unix://") and not Path(socket).exists():
            return None  # crictl would spend seconds retrying a socket that is not there
        proc = self.crictl_run("info", timeout=TIMEOUTS.cri_probe)
        if proc.returncode != 0:
            return None
        try:
            return json.loads(proc.stdout).get("config") or {}
        except json.JSONDecodeError:
            return None

    def restart(self) -> None:
        self.say(f"restarting containerd: {shlex.join(self.restart_command)}")
        try:
            proc = subprocess.run(self.restart_command, capture_output=True, text=True,
                                  timeout=TIMEOUTS.daemon_start)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise StepFailed(f"the restart command failed: {exc}") from None
        if proc.returncode != 0:
            raise StepFailed(f"the restart command exited {proc.returncode}: "
                             f"{(proc.stderr or proc.stdout).strip()[-500:]}")

    def wait_for_cri(self) -> dict[str, Any]:
        start = time.monotonic()
        try:
            config = wait_until(self.cri_config, TIMEOUTS.daemon_start,
                                f"CRI at {self.endpoint} to answer",
                                interval=TIMEOUTS.ready_poll)
        except WaitTimeout as exc:
            raise StepFailed(str(exc)) from None
        self.say(f"CRI answered {time.monotonic() - start:.1f} s after the restart")
        return config


def runtimes_of(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Handler -> its effective runtime config, from ``crictl info``'s config (1.x and 2.x)."""
    runtimes = (config.get("containerd") or {}).get("runtimes") or config.get("runtimes")
    return runtimes or {}


def sandbox_image(config: dict[str, Any]) -> str | None:
    pinned = config.get("pinnedImages") or {}
    return config.get("sandboxImage") or pinned.get("sandbox")


@dataclass
class Outcome:
    ok: bool
    reason: str = ""
    rolled_back: bool = False
    proven: bool = False
    backups: list[Path] = field(default_factory=list)


def diff(path: Path, old: str | None, new: str) -> str:
    return "".join(difflib.unified_diff(
        (old or "").splitlines(keepends=True), new.splitlines(keepends=True),
        fromfile=str(path) if old is not None else "/dev/null", tofile=str(path)))


def plan_lines(writes: dict[Path, str], node: Node, runtimes: list[Runtime]) -> list[str]:
    handlers = ", ".join(rt.handler for rt in runtimes)
    return [
        f"check that CRI answers at {node.endpoint} and read its effective config",
        "check that the sandbox image is present"
        + (f" (import {node.image_archive} if not)" if node.image_archive else ""),
        *(f"back up {p} and write it atomically" if p.exists() else f"write {p} (new)"
          for p in writes),
        f"restart containerd: {shlex.join(node.restart_command)}",
        "wait until CRI answers",
        f"check handlers in CRI's effective config: {handlers}",
        f"start one pod per handler: {handlers}",
        "on any failure: restore the backups, restart, prove CRI's config is the old one",
    ]


def apply(writes: dict[Path, str], runtimes: list[Runtime], node: Node) -> Outcome:
    """Write ``writes`` (path -> new text) to the node and prove them, or roll back."""
    before = node.cri_config()
    if before is None:
        raise UserError(f"CRI at {node.endpoint} does not answer: start the node's containerd "
                        "(or give its socket with --address) and run again")
    _ensure_sandbox_image(node, before)
    originals = {p: (p.read_bytes() if p.exists() else None) for p in writes}
    outcome = Outcome(ok=False)
    try:
        for path, text in writes.items():
            if path.exists():
                outcome.backups.append(backup(path))
            atomic_write(path, text)
            node.say(f"wrote {path}" + (f" (backup {outcome.backups[-1]})"
                                        if originals[path] is not None else ""))
        node.restart()
        after = node.wait_for_cri()
        _check_handlers(after, runtimes, node)
        for rt in runtimes:
            _check_pod(node, rt.handler)
    except StepFailed as exc:
        outcome.reason = str(exc)
        node.say(f"FAILED: {exc}; rolling back")
        outcome.rolled_back, outcome.proven = True, _roll_back(originals, node, before)
        return outcome
    except BaseException:  # interrupted or a bug: the node must not keep a half-applied change
        node.say("interrupted; rolling back")
        _roll_back(originals, node, before)
        raise
    outcome.ok = True
    return outcome


def _ensure_sandbox_image(node: Node, config: dict[str, Any]) -> None:
    image = sandbox_image(config)
    if image is None or node.crictl_run("inspecti", image).returncode == 0:
        return
    if node.image_archive is not None:
        address = node.endpoint.removeprefix("unix://")
        import_archive(node.image_archive, address, "k8s.io", node.ctr)
        if node.crictl_run("inspecti", image).returncode == 0:
            return
    raise UserError(f"the node's sandbox image {image} is not present, so no pod can start "
                    "to check the handlers: import it (ctr -n k8s.io images import) and run "
                    "again")


def _check_handlers(config: dict[str, Any], runtimes: list[Runtime], node: Node) -> None:
    effective = runtimes_of(config)
    for rt in runtimes:
        got = effective.get(rt.handler)
        if got is None:
            raise StepFailed(f"handler {rt.handler!r} is not in CRI's effective config after "
                             "the restart")
        rtype = got.get("runtimeType") or got.get("runtime_type")
        if rtype != rt.runtime_type:
            raise StepFailed(f"handler {rt.handler!r} has runtime_type {rtype!r}, expected "
                             f"{rt.runtime_type!r}")
        node.say(f"ok   {rt.handler}: in CRI's effective config, runtime_type {rtype}")


def _check_pod(node: Node, handler: str) -> None:
    """One sandbox on ``handler``, on the node's network (no CNI needed), then removed."""
    name = f"sandcheck-apply-{handler}-{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory(prefix="sandcheck-apply-") as tmp:
        config = Path(tmp) / "pod.json"
        config.write_text(json.dumps({
            "metadata": {"name": name, "namespace": "sandcheck", "uid": name, "attempt": 0},
            "log_directory": tmp, "labels": {APPLY_LABEL: handler},
            "linux": {"security_context": {"namespace_options": {"network": 2}}},
        }))
        start = time.monotonic()
        proc = node.crictl_run("runp", "--runtime", handler, str(config),
                               timeout=TIMEOUTS.pod_start)
        if proc.returncode != 0:
            raise StepFailed(f"a pod on handler {handler!r} did not start: "
                             f"{(proc.stderr or proc.stdout).strip()[-800:]}")
        pod = proc.stdout.strip()
        took = time.monotonic() - start
        try:
            state = json.loads(node.crictl_run("inspectp", pod).stdout or "{}")
            ready = (state.get("status") or {}).get("state")
            got = (state.get("status") or {}).get("runtimeHandler")
            if ready != "SANDBOX_READY" or got != handler:
                raise StepFailed(f"the pod on handler {handler!r} is {ready} on {got!r}")
        finally:
            node.crictl_run("stopp", pod)
            node.crictl_run("rmp", "-f", pod)
    node.say(f"ok   {handler}: a pod started in {took:.1f} s (crictl runp) and was removed")


def _roll_back(originals: dict[Path, bytes | None], node: Node,
               before: dict[str, Any]) -> bool:
    """Put every file back as it was, restart, and prove the old config is in effect."""
    for path, data in originals.items():
        if data is None:
            path.unlink(missing_ok=True)
        else:
            atomic_write(path, data)
        node.say(f"restored {path}" if data is not None else f"removed {path}")
    try:
        node.restart()
        after = node.wait_for_cri()
    except StepFailed as exc:
        node.say(f"ROLLBACK INCOMPLETE: {exc}")
        return False
    if after != before:
        node.say("ROLLBACK INCOMPLETE: CRI's effective config differs from the one before")
        return False
    node.say("rolled back: CRI's effective config is identical to the one before the apply")
    return True


def restart_argv(command: str | None) -> list[str]:
    if command is None:
        return default_restart_command()
    argv = shlex.split(command)
    if not argv:
        raise UserError("--restart-command is empty: give the command that restarts containerd")
    return argv

