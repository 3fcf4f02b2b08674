"""Escape profiles: which escape preconditions each kind of pod of a runtime may show.

The preconditions themselves, and how a pod's observation is judged, are in
sandcheck/judges/escape.py; this holds the catalog's side: the profile type and the
built-in runtimes' profiles.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EscapeProfile:
    """The escape preconditions (sandcheck/judges/escape.py) each kind of pod may show.

    A default pod and a restricted one (drop ALL, uid 65534, no privilege escalation) may
    show only the preconditions listed; a privileged pod is the control: it must show
    ``privileged_required`` (a probe that sees nothing there is blind) and nothing outside
    ``privileged`` (None: anything)."""

    default: frozenset[str] = frozenset()
    restricted: frozenset[str] = frozenset()
    privileged: frozenset[str] | None = None
    privileged_required: frozenset[str] = frozenset()
    notes: str = ""
    """Why this runtime's sets are what they are (kept with each check's evidence)."""


# runc and crun share the node's kernel: a default or restricted pod shows none, and a
# privileged one anything of the node's; required are those it shows on cgroup v1 and v2.
NATIVE_ESCAPE = EscapeProfile(
    privileged_required=frozenset({"cgroupfs_mountable", "proc_sys_writable",
                                   "core_pattern_writable", "block_device_present"}),
    notes="A privileged pod is the node: the node's /proc/sys and core_pattern are writable, "
    "cgroupfs mounts (with release_agent on cgroup v1), the node's block devices open. "
    "/sys is not required: in runc's privileged pods the pod network namespace's sysfs "
    "superblock stays read-only (crun's privileged pods remount it writable).",
)

# gVisor: every file below is the Sentry's own, so what holds there reaches no host kernel.
_SENTRY_OWN = frozenset({"proc_sys_writable", "sysrq_trigger_writable"})
GVISOR_ESCAPE = EscapeProfile(
    default=_SENTRY_OWN,
    privileged=_SENTRY_OWN | {"sys_writable", "cgroupfs_mountable", "block_device_present"},
    privileged_required=frozenset({"cgroupfs_mountable", "sys_writable",
                                   "proc_sys_writable"}),
    notes="As with runc, /proc/<pid>/exe and every cwd resolve inside the sandbox. Unlike "
    "runc: stdio descriptors are the Sentry's host:[N] files, not the node's /dev/null and "
    "pipes; /proc/kcore, /proc/kallsyms and core_pattern do not exist; /proc/sys and "
    "/proc/sysrq-trigger are the Sentry's and writable by root even in a default pod. "
    "Privileged, the Sentry mounts its own cgroupfs (no release_agent; cgroup2 is ENODEV), "
    "makes /sys writable, and lists the node's block "
    "devices in /dev without being able to open them (ENXIO). Exec of a binary with file "
    "capabilities outside the bounding set runs without them where Linux answers EPERM, "
    "and exec of the setuid-root copy kept euid 65534 even without no_new_privs.",
)
