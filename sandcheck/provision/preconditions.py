"""A runtime's host precondition beyond its binaries, tried for real before the runtime is
used: a runtime whose precondition fails is left out of the run like one whose binaries
are missing, its checks skip naming the reason, and the evidence goes into the report.

  kvm   gVisor's KVM platform: /dev/kvm's answers (sandcheck/host/kvm.py), then a sandbox
        booted on that platform (``true`` under ``runsc --platform=kvm``): only a guest
        that ran decides, since a VM can make VMs yet refuse their vCPUs' registers.
  kata  Kata Containers: ``kata-runtime env`` (its configuration: hypervisor, guest
        kernel) and ``kata-runtime check`` (whether this host can run its VMs).

Each is tried once per binary per process (the node, local, docker and kind backends and
``provision`` ask the same question); a probe starts nothing that outlives it: runsc runs
in a cgroup of its own under a work dir of its own, both removed after it.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandcheck.catalog import Runtime
from sandcheck.host import runcgroups
from sandcheck.host.kvm import guest_failure, kvm_evidence, kvm_unusable
from sandcheck.host.workdir import WORK_BASE, claim, delete_tree
from sandcheck.provision.paths import search_path
from sandcheck.timeouts import TIMEOUTS, WaitTimeout, wait_until

_GLOG_HEADER = re.compile(r"^[DIWEF]\d{4} [\d:.]+\s+\d+ ")
"""The level, date, time and thread of a runsc log line (glog's header)."""
OUTPUT_TAIL = 30
"""Lines of a probe's output kept as evidence."""
PROBE_BACKEND = "precondition"
"""The work dir and cgroup prefix of a probe (``sandcheck cleanup`` finds them by it)."""


@dataclass(frozen=True)
class Outcome:
    """A precondition tried: ``reason`` is None when it holds."""

    precondition: str
    reason: str | None
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def holds(self) -> bool:
        return self.reason is None

    def as_dict(self) -> dict[str, Any]:
        return {"precondition": self.precondition, "holds": self.holds,
                "reason": self.reason, **self.evidence}


def _tail(text: str, lines: int = OUTPUT_TAIL) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _run(argv: list[str], timeout: float, **kw: Any) -> dict[str, Any]:
    """A probe command as evidence: argv, exit code, output tail, seconds."""
    start = time.monotonic()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, **kw)
        code, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        code = None
        out = "".join(x.decode(errors="replace") if isinstance(x, bytes) else (x or "")
                      for x in (exc.stdout, exc.stderr)) + f"\n(no exit within {timeout:.0f}s)"
    except OSError as exc:
        code, out = None, str(exc)
    return {"command": argv, "exit_code": code, "output": _tail(out),
            "seconds": round(time.monotonic() - start, 2)}


# ---- gVisor on KVM ------------------------------------------------------------------------

def boot_reason(boot: dict[str, Any]) -> str | None:
    """Why the sandbox on KVM failed, from its evidence (None: it ran): the sandbox's
    panic or fatal error where it left one, else the last line runsc printed."""
    if boot.get("exit_code") == 0:
        return None
    if boot.get("error"):
        at = f" ({boot['at']})" if boot.get("at") else ""
        return f"runsc cannot start a sandbox on the KVM platform here: {boot['error']}{at}"
    if boot.get("exit_code") is None and boot.get("last_boot_line"):
        return (f"runsc's sandbox on the KVM platform did not finish `true` within "
                f"{boot.get('seconds', 0):.0f}s here (killed); the last line its kernel "
                f"logged: {boot['last_boot_line']}")
    text = boot.get("output", "")
    last = next((ln for ln in reversed(text.strip().splitlines()) if ln.strip()), "no output")
    return (f"runsc cannot start a sandbox on the KVM platform here: exit "
            f"{boot.get('exit_code')}: {last.strip()}")


def _kvm(runtime: Runtime, path: str) -> Outcome:
    evidence: dict[str, Any] = {"kvm": kvm_evidence()}
    why = kvm_unusable(evidence["kvm"])
    if why is not None:
        return Outcome("kvm", f"{runtime.name} needs KVM: {why}", evidence)
    runsc = shutil.which("runsc", path=path)
    if runsc is None:
        return Outcome("kvm", "runsc not found: run `sandcheck provision --runtimes "
                       f"{runtime.name}`", evidence)
    evidence["boot"] = boot_on_kvm(runsc)
    return Outcome("kvm", boot_reason(evidence["boot"]), evidence)


def boot_on_kvm(runsc: str) -> dict[str, Any]:
    """``true`` in a gVisor sandbox on the KVM platform (``runsc run`` of a bundle whose
    root is the host's ``/``, read-only, under an overlay in memory: what ``runsc do``
    runs, but in the probe's own cgroup, where ``runsc do`` would make a top-level one).
    The work dir and cgroup are removed after it, with whatever the sandbox left running."""
    run_id = time.strftime("%Y%m%d%H%M%S") + "-" + uuid.uuid4().hex[:6]
    workdir = WORK_BASE / f"{PROBE_BACKEND}-{run_id}"
    cgroup = runcgroups.run_cgroup(run_id, PROBE_BACKEND)
    claim(workdir)
    logs, bundle = workdir / "logs", workdir / "bundle"
    logs.mkdir()
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps(probe_spec(f"{cgroup}/sandbox")))
    argv = [runsc, "--root", str(workdir / "state"), "--network=none", "--platform=kvm",
            "--overlay2=root:memory", f"--debug-log={logs}/", "run", "--bundle",
            str(bundle), f"kvm-probe-{run_id}"]
    try:
        boot = _run(argv, TIMEOUTS.runtime_precondition, cwd=workdir,
                    preexec_fn=runcgroups.entering(cgroup))
        if boot["exit_code"] != 0:
            boot.update(_sandbox_failure(logs, cgroup))
    finally:
        runcgroups.release(cgroup)
        delete_tree(workdir)
    return boot


def probe_spec(cgroups_path: str) -> dict[str, Any]:
    """The OCI spec of the KVM probe: ``true`` with the host's root read-only, in new
    namespaces (no network), in ``cgroups_path``."""
    return {
        "ociVersion": "1.0.2",
        "process": {"args": ["true"], "cwd": "/", "user": {"uid": 0, "gid": 0},
                    "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]},
        "root": {"path": "/", "readonly": True},
        "hostname": "sandcheck-kvm-probe",
        "linux": {"cgroupsPath": cgroups_path,
                  "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount",
                                                       "network")]},
    }


def _sandbox_failure(logs: Path, cgroup: str) -> dict[str, str]:
    """The sandbox's panic or fatal error from runsc's debug logs: ``error``, ``at``,
    ``failed_in`` (whose log: boot, gofer, run) and an excerpt. The sandbox may still be
    writing it after runsc gave up on it, so the logs are read until it shows, or until
    they stop growing with nothing left in the probe's cgroup."""
    seen: dict[str, Any] = {}

    def settled() -> bool | None:
        texts = {p.name: p.read_text(errors="replace")
                 for p in sorted(logs.glob("*")) if p.is_file()}
        for name, text in texts.items():
            failure = guest_failure(text)
            if failure is not None:
                lines = text.splitlines()
                at = next(i for i, ln in enumerate(lines) if failure["error"] in ln)
                seen.update(failure, failed_in=name.rsplit(".", 2)[-2],
                            excerpt="\n".join(lines[max(0, at - 3):at + 12]))
                return True
        sizes = sorted((name, len(text)) for name, text in texts.items())
        if sizes == seen.get("sizes") and not runcgroups.members(cgroup):
            return True
        seen["sizes"] = sizes
        return None

    with contextlib.suppress(WaitTimeout):
        wait_until(settled, TIMEOUTS.kill_grace, "the KVM probe's sandbox to write its logs",
                   interval=TIMEOUTS.ready_poll)
    seen.pop("sizes", None)
    if "error" not in seen:  # no panic: a sandbox that hung says where it stopped
        boot_log = next((p for p in sorted(logs.glob("*.boot.txt")) if p.is_file()), None)
        lines = boot_log.read_text(errors="replace").strip().splitlines() if boot_log else []
        if lines:
            seen.update(last_boot_line=_GLOG_HEADER.sub("", lines[-1].strip()),
                        excerpt="\n".join(lines[-12:]))
    return seen


# ---- Kata ---------------------------------------------------------------------------------

def _kata(runtime: Runtime, path: str) -> Outcome:
    kata = shutil.which("kata-runtime", path=path)
    if kata is None:
        return Outcome("kata", "kata-runtime not found: install Kata Containers (its static "
                       "release or kata-deploy) and put kata-runtime on PATH")
    env = _run([kata, "env", "--json"], TIMEOUTS.runtime_precondition)
    check = _run([kata, "check", "--no-network-checks"], TIMEOUTS.runtime_precondition)
    evidence: dict[str, Any] = {"kata_runtime_env": env, "kata_runtime_check": check}
    parsed = kata_env(env.get("output", ""))
    if parsed:
        evidence["kata"] = parsed
    return Outcome("kata", kata_check_reason(check), evidence)


def kata_env(output: str) -> dict[str, Any]:
    """The facts a report names from ``kata-runtime env --json`` (its EnvInfo): the
    hypervisor (path, version), the guest kernel and image, the configuration file, the
    runtime's version. Empty when the output is not that JSON."""
    try:
        doc = json.loads(output[output.index("{"):])
    except ValueError:
        return {}
    if not isinstance(doc, dict):
        return {}

    def at(*keys: str) -> Any:
        node: Any = doc
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else None
        return node or None

    return {"hypervisor": at("Hypervisor", "Path"),
            "hypervisor_version": at("Hypervisor", "Version"),
            "guest_kernel": at("Kernel", "Path"),
            "guest_image": at("Image", "Path") or at("Initrd", "Path"),
            "config": at("Runtime", "Config", "Path"),
            "version": at("Runtime", "Version", "Version", "Semver")}


def kata_check_reason(check: dict[str, Any]) -> str | None:
    """Why ``kata-runtime check`` says no (None: the host can run Kata's VMs)."""
    if check.get("exit_code") == 0:
        return None
    lines = [ln.strip() for ln in check.get("output", "").splitlines() if ln.strip()]
    said = next((ln for ln in reversed(lines) if "ERROR" in ln or "error" in ln),
                lines[-1] if lines else "no output")
    return f"kata-runtime check fails on this host (exit {check.get('exit_code')}): {said}"


PRECONDITIONS: dict[str, Callable[[Runtime, str], Outcome]] = {"kvm": _kvm, "kata": _kata}
_TRIED: dict[tuple[str, str | None], Outcome] = {}


def try_precondition(runtime: Runtime, path: str | None = None) -> Outcome | None:
    """The runtime's precondition tried on this host (None: it has none). ``path``: the
    PATH its binaries are found on (default: sandcheck's, as provisioned)."""
    name = runtime.precondition
    if name is None:
        return None
    probe = PRECONDITIONS.get(name)
    if probe is None:
        return Outcome(name, f"{runtime.name} names precondition {name!r}, which sandcheck "
                       f"does not know (known: {', '.join(PRECONDITIONS)})")
    path = path or search_path()
    key_binary = shutil.which(runtime.binaries[0], path=path) if runtime.binaries else None
    key = (name, key_binary)
    if key not in _TRIED:
        _TRIED[key] = probe(runtime, path)
    return _TRIED[key]


def not_runnable(runtimes: list[Runtime], path: str | None = None
                 ) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """Of ``runtimes``: name -> why it cannot run here (its precondition fails), and name
    -> the evidence of every precondition tried (for the environment of a report)."""
    reasons: dict[str, str] = {}
    evidence: dict[str, dict[str, Any]] = {}
    for rt in runtimes:
        outcome = try_precondition(rt, path)
        if outcome is None:
            continue
        evidence[rt.name] = outcome.as_dict()
        if not outcome.holds:
            reasons[rt.name] = outcome.reason or ""
    return reasons, evidence
