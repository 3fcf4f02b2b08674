"""The syscall outcomes a pod's probe reports, and the built-in runtimes' expected ones.

A probed call's result is reduced to an outcome class (``classify``); a catalog entry
names, per syscall, the classes that conform, under RuntimeDefault seccomp and with no
filter at all. Kept apart from the entries so the probe's judges and a user's catalog
file share one vocabulary.
"""

from __future__ import annotations

from typing import Any

# Outcome classes of a probed syscall (see sandcheck/fixtures/probe/probe.c):
#   ok          the call succeeded
#   denied      EPERM/EACCES: a filter or a missing capability stopped it
#   unsupported ENOSYS/EOPNOTSUPP/ENODEV: the kernel the workload talks to lacks it
#   reached     another errno (EINVAL, EFAULT, ...): the call reached an implementation
OUTCOMES = ("ok", "denied", "unsupported", "reached")
BLOCKED = frozenset({"denied", "unsupported"})
_DENIED_ERRNOS = {"EPERM", "EACCES"}
_UNSUPPORTED_ERRNOS = {"ENOSYS", "EOPNOTSUPP", "ENOTSUP", "ENODEV"}


def classify(result: dict[str, Any]) -> str:
    """Outcome class of one probed syscall result ``{"ret": int, "errno": name|None}``."""
    if result.get("ret", -1) >= 0 and not result.get("errno"):
        return "ok"
    err = result.get("errno")
    if err in _DENIED_ERRNOS:
        return "denied"
    if err in _UNSUPPORTED_ERRNOS:
        return "unsupported"
    return "reached"


# Under RuntimeDefault, containerd's seccomp profile refuses these (a filter answers
# EPERM before any kernel sees the call), whatever runtime enforces it.
_FILTERED_DENIED = (
    "keyctl", "add_key", "bpf", "perf_event_open", "init_module", "kexec_load",
    "userfaultfd", "unshare_user", "unshare_mnt", "setns", "mount", "reboot", "syslog",
    "open_by_handle_at", "acct", "pivot_root", "swapon", "fsopen",
)
NATIVE_SYSCALLS = {name: frozenset({"denied"}) for name in _FILTERED_DENIED}
# ptrace of one's own child is allowed by the default profile on kernels >= 4.8.
NATIVE_SYSCALLS["ptrace_attach"] = frozenset({"ok"})

# No filter, default capabilities: what the node's kernel refuses for lack of a capability
# (CAP_SYS_ADMIN, CAP_SYS_BOOT, CAP_SYS_MODULE, ...). Calls whose answer depends on host
# sysctls (bpf, perf_event_open, syslog with dmesg_restrict=0) are recorded, not judged.
NATIVE_UNFILTERED = {
    **{name: frozenset({"denied"}) for name in (
        "mount", "unshare_mnt", "setns", "reboot", "acct", "pivot_root", "swapon")},
    **{name: BLOCKED for name in ("init_module", "kexec_load")},
}

# gVisor under RuntimeDefault (with oci-seccomp): the same filter, enforced by the Sentry;
# io_uring is not offered at all.
GVISOR_SYSCALLS = {**NATIVE_SYSCALLS, "io_uring_setup": frozenset({"unsupported"})}
# gVisor with no filter: the Sentry's own answers, documented to differ from Linux's:
# no perf events, userfaultfd, io_uring or file handles; an emulated kernel log.
GVISOR_UNFILTERED = {
    **{name: frozenset({"unsupported"}) for name in (
        "perf_event_open", "userfaultfd", "io_uring_setup", "open_by_handle_at")},
    **{name: BLOCKED for name in ("init_module", "kexec_load", "bpf")},
    **{name: frozenset({"denied"}) for name in ("mount", "reboot", "unshare_mnt", "setns")},
    "syslog": frozenset({"ok"}),
}

VM_SYSCALLS: dict[str, frozenset[str]] = {}
