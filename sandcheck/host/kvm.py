"""What this host's KVM answers: the device, its API version, whether a VM can be made, and
the line that says why a guest could not start (pure parsing apart from the ioctls).

gVisor's KVM platform and Kata's VMs need more than a ``/dev/kvm`` that opens: in a VM
whose nested virtualisation is partial, KVM_GET_API_VERSION answers 12 and KVM_CREATE_VM
succeeds, yet runsc's sandbox dies setting up the guest (here: ``panic: error initializing
vCPU(id=0) state: error setting system registers: invalid argument`` in most boots,
``fatal error: set memory region failed; out of slots`` in the others). So the ioctls are
evidence, and only a guest booted for real decides (sandcheck/provision/preconditions.py).
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
from typing import Any

DEVICE = "/dev/kvm"
KVM_GET_API_VERSION = 0xAE00
KVM_CREATE_VM = 0xAE01
KVM_API_VERSION = 12
"""The only KVM API version Linux has answered since 2.6.22."""


def _errno_text(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return f"{name}: {exc.strerror}"


def kvm_evidence(device: str = DEVICE) -> dict[str, Any]:
    """The device and its answers: ``present``, then ``open`` ("ok" or the errno),
    ``api_version`` and ``create_vm`` ("ok" or the errno). The VM made is closed at once."""
    found: dict[str, Any] = {"device": device, "present": os.path.exists(device)}
    if not found["present"]:
        return found
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        found["open"] = _errno_text(exc)
        return found
    found["open"] = "ok"
    try:
        found["api_version"] = fcntl.ioctl(fd, KVM_GET_API_VERSION, 0)
        try:
            vm = fcntl.ioctl(fd, KVM_CREATE_VM, 0)
        except OSError as exc:
            found["create_vm"] = _errno_text(exc)
        else:
            os.close(vm)
            found["create_vm"] = "ok"
    except OSError as exc:
        found["api_version"] = _errno_text(exc)
    finally:
        os.close(fd)
    return found


def kvm_unusable(evidence: dict[str, Any]) -> str | None:
    """Why the ioctls alone rule KVM out (None: they do not)."""
    device = evidence.get("device", DEVICE)
    if not evidence.get("present"):
        return (f"{device} does not exist: this host exposes no KVM (load kvm_intel or "
                "kvm_amd, or give the VM nested virtualisation)")
    if evidence.get("open") != "ok":
        return f"{device} does not open: {evidence.get('open')}"
    if evidence.get("api_version") != KVM_API_VERSION:
        return (f"{device} answers KVM_GET_API_VERSION with {evidence.get('api_version')}, "
                f"not {KVM_API_VERSION}")
    if evidence.get("create_vm") != "ok":
        return f"{device} refuses KVM_CREATE_VM: {evidence.get('create_vm')}"
    return None


_FAILURE = re.compile(r"(?P<kind>panic|fatal error): (?P<what>.+)")
_GO_FRAME = re.compile(r"^\s+(?P<file>\S+\.go):(?P<line>\d+)")
_MODULE_VERSION = re.compile(r"@v[^/]+")


def guest_failure(output: str) -> dict[str, str] | None:
    """The first ``panic: ...`` or ``fatal error: ...`` (a Go runtime throw) in a guest's
    output (gVisor's Sentry, Go programs in general) as ``error``, and where it was raised
    as ``at``: the first frame of the stack below it outside Go's own runtime, as
    ``package.function, file:line`` with the module's version left out."""
    lines = output.splitlines()
    for i, line in enumerate(lines):
        m = _FAILURE.search(line)
        if m is None:
            continue
        found = {"error": f"{m['kind']}: {m['what'].strip()}"}
        for above, below in zip(lines[i + 1:], lines[i + 2:], strict=False):
            frame = _GO_FRAME.match(below)
            if frame is None or frame["file"].startswith("runtime/"):
                continue
            function = above.strip().split("(0x")[0].rstrip("(").rsplit("/", 1)[-1]
            where = _MODULE_VERSION.sub("", frame["file"])
            found["at"] = f"{function}, {where}:{frame['line']}"
            break
        return found
    return None
