"""Escape preconditions: which ones a pod's ``probe escape`` evidence shows to hold.

The probe only reports what it saw (sandcheck/fixtures/probe/probe.c, the "escape" mode); this
module turns that document into named preconditions, each with the evidence that made it
hold, so a check can say exactly which one held and why. The runtime catalog states which
preconditions each kind of pod may show (``EscapeProfile`` in sandcheck/catalog/escape.py).

Pure functions on parsed JSON: no I/O, so they are tested on sample documents.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

PRECONDITIONS: dict[str, str] = {
    "host_exe_reachable": "a process's /proc/<pid>/exe is a file outside the container's root "
    "(CVE-2019-5736 reached the runtime's own binary that way)",
    "host_exe_writable": "a file outside the root behind /proc/<pid>/exe opens for writing",
    "host_fd_open": "a process holds a file descriptor to a directory, file or device outside "
    "the root (CVE-2024-21626: a leaked host directory fd)",
    "cwd_outside_root": "a process's working directory or root lies outside the container's "
    "root, or getcwd(2) answers unreachable",
    "release_agent_writable": "a cgroup v1 release_agent opens for writing (one the container "
    "sees, or one in a cgroup filesystem it mounted)",
    "notify_on_release_writable": "a cgroup v1 notify_on_release opens for writing",
    "cgroupfs_mountable": "a cgroup or cgroup2 filesystem can be mounted",
    "sys_writable": "/sys is on a read-write mount and passes access(W_OK)",
    "proc_sys_writable": "/proc/sys is on a read-write mount and a sysctl file passes "
    "access(W_OK)",
    "sysrq_trigger_writable": "/proc/sysrq-trigger is there, not masked, and passes "
    "access(W_OK)",
    "core_pattern_writable": "/proc/sys/kernel/core_pattern is there, not masked, and passes "
    "access(W_OK)",
    "kcore_readable": "/proc/kcore is there, not masked, and opens for reading",
    "kallsyms_addresses": "/proc/kallsyms shows non-zero kernel addresses",
    "block_device_present": "a block device node exists under /dev",
    "block_device_openable": "a block device node opens for reading",
    "host_path_mount": "a host directory or file is mounted into the container (a disk or "
    "gofer filesystem mounted somewhere other than / and the runtime's own files)",
    "runtime_socket": "a container runtime's socket (containerd, docker, cri-o, ...) is "
    "reachable, or a socket is mounted in",
    "setuid_root": "a non-root process became uid 0 with setuid(0)",
    "ambient_raise": "an ambient capability outside the permitted set was raised",
    "suid_exec_gains": "exec'ing a setuid-root binary raised the uid or the capabilities",
    "fcap_exec_gains": "exec'ing a binary with file capabilities raised the capabilities",
}
"""Every precondition the judgement knows, with what "holds" means."""

RUNTIME_FILES = frozenset({"/etc/hosts", "/etc/hostname", "/etc/resolv.conf",
                           "/dev/termination-log"})
"""Files every runtime bind-mounts from the node's pod directory: not host paths."""
VIRTUAL_FS = frozenset({
    "overlay", "tmpfs", "proc", "sysfs", "cgroup", "cgroup2", "devpts", "mqueue", "devtmpfs",
    "dev", "securityfs", "debugfs", "tracefs", "bpf", "fusectl", "configfs", "pstore",
    "binfmt_misc", "hugetlbfs", "autofs", "nsfs", "efivarfs", "rpc_pipefs", "shm",
})
"""Filesystems that hold no host files (gVisor calls its /dev "dev")."""
RUNTIME_SOCKETS = frozenset({
    "containerd.sock", "containerd.sock.ttrpc", "docker.sock", "crio.sock",
    "cri-dockerd.sock", "dockershim.sock", "podman.sock", "frakti.sock",
})
HARMLESS_DEVICES = frozenset({"1:3", "1:5", "1:7", "1:8", "1:9"})
"""null, zero, full, random, urandom: a host node of these is the same device inside."""
SYSCTL_FILES = ("/proc/sys/kernel/core_pattern", "/proc/sys/kernel/hostname",
                "/proc/sys/vm/overcommit_memory")


@dataclass
class Assessment:
    """What one ``probe escape`` document shows: held preconditions with their evidence,
    and the ones it could not judge (with why)."""

    held: dict[str, list[Any]] = field(default_factory=dict)
    unmeasured: dict[str, str] = field(default_factory=dict)

    def hold(self, name: str, evidence: Any) -> None:
        self.held.setdefault(name, []).append(evidence)

    def names(self) -> frozenset[str]:
        return frozenset(self.held)


def assess(doc: dict[str, Any]) -> Assessment:
    """The preconditions that hold in ``doc`` (the probe's escape JSON)."""
    a = Assessment()
    _processes(doc, a)
    _cgroups(doc, a)
    _paths(doc, a)
    _devices_mounts_sockets(doc, a)
    _privileges(doc, a)
    unknown = set(a.held) - set(PRECONDITIONS)
    assert not unknown, f"undeclared preconditions {unknown}"
    return a


def _outside(link: dict[str, Any]) -> bool:
    return link.get("kind") == "path" and link.get("same_file") is False


def _processes(doc: dict[str, Any], a: Assessment) -> None:
    for proc in doc.get("processes") or []:
        pid, exe = proc.get("pid"), proc.get("exe") or {}
        if _outside(exe):
            a.hold("host_exe_reachable", {"pid": pid, "exe": exe.get("target")})
        if (exe.get("write_open") or {}).get("ok"):
            a.hold("host_exe_writable", {"pid": pid, "exe": exe.get("target"),
                                         "write_open": exe["write_open"]})
        for key in ("cwd", "root"):
            link = proc.get(key) or {}
            if _outside(link):
                a.hold("cwd_outside_root", {"pid": pid, key: link.get("target")})
        for fd in proc.get("fds") or []:
            if not _outside(fd):
                continue
            kind = fd.get("type")
            if kind in ("dir", "file", "blk") or (
                    kind == "chr" and fd.get("rdev") not in HARMLESS_DEVICES):
                a.hold("host_fd_open", {"pid": pid, "fd": fd.get("fd"),
                                        "target": fd.get("target"), "type": kind,
                                        "rdev": fd.get("rdev")})
    cwd = doc.get("cwd") or {}
    if cwd and not cwd.get("reachable"):
        a.hold("cwd_outside_root", {"getcwd": cwd.get("getcwd"), "errno": cwd.get("errno")})


def _cgroups(doc: dict[str, Any], a: Assessment) -> None:
    for entry in doc.get("cgroup_files") or []:
        name = str(entry.get("path", "")).rsplit("/", 1)[-1]
        if entry.get("open_w_ok") and name in ("release_agent", "notify_on_release"):
            a.hold(f"{name}_writable", {"path": entry["path"], "open_w": "ok"})
    mount = doc.get("cgroup_mount") or {}
    if not mount.get("attempts"):
        a.unmeasured["cgroupfs_mountable"] = (
            f"no mount was tried: {mount.get('tmpdir_errno') or 'the probe reported nothing'}")
    for attempt in mount.get("attempts") or []:
        if not attempt.get("ok"):
            continue
        what = {"fstype": attempt.get("fstype"), "options": attempt.get("options"),
                "namespace": mount.get("namespace")}
        a.hold("cgroupfs_mountable", what)
        for name in ("release_agent", "notify_on_release"):
            if (attempt.get(name) or {}).get("open_w_ok"):
                a.hold(f"{name}_writable", {**what, "file": name, "open_w": "ok"})


def _writable(info: dict[str, Any]) -> bool:
    """Present, not a /dev/null mask, not on a read-only mount, and access(W_OK) passes."""
    return bool(info.get("exists") and not info.get("dev_null")
                and info.get("statvfs_ro") is False and info.get("access_w_ok"))


def _paths(doc: dict[str, Any], a: Assessment) -> None:
    paths = doc.get("paths") or {}

    def show(path: str) -> dict[str, Any]:
        return {"path": path, **{k: v for k, v in (paths.get(path) or {}).items()
                                 if k in ("exists", "type", "dev_null", "statvfs_ro",
                                          "access_w", "open_r")}}

    if _writable(paths.get("/sys") or {}):
        a.hold("sys_writable", show("/sys"))
    proc_sys = paths.get("/proc/sys") or {}
    if proc_sys.get("exists") and proc_sys.get("statvfs_ro") is False:
        for path in SYSCTL_FILES:
            if _writable(paths.get(path) or {}):
                a.hold("proc_sys_writable", show(path))
    for path, name in (("/proc/sysrq-trigger", "sysrq_trigger_writable"),
                       ("/proc/sys/kernel/core_pattern", "core_pattern_writable")):
        if _writable(paths.get(path) or {}):
            a.hold(name, show(path))
    kcore = paths.get("/proc/kcore") or {}
    if kcore.get("exists") and not kcore.get("dev_null") and kcore.get("open_r_ok"):
        a.hold("kcore_readable", show("/proc/kcore"))
    if doc.get("kallsyms_nonzero"):
        a.hold("kallsyms_addresses", show("/proc/kallsyms"))


def _devices_mounts_sockets(doc: dict[str, Any], a: Assessment) -> None:
    for dev in doc.get("block_devices") or []:
        a.hold("block_device_present", {"path": dev.get("path"), "rdev": dev.get("rdev")})
        if dev.get("open_r_ok"):
            a.hold("block_device_openable", {"path": dev.get("path"), "rdev": dev.get("rdev"),
                                             "open_r": "ok"})
    for m in doc.get("mountinfo") or []:
        target, fstype = m.get("target"), m.get("fstype")
        if target == "/" or target in RUNTIME_FILES or fstype in VIRTUAL_FS:
            continue
        a.hold("host_path_mount", {k: m.get(k) for k in ("target", "root", "fstype",
                                                          "source")})
    for path in doc.get("sockets") or []:
        if str(path).rsplit("/", 1)[-1] in RUNTIME_SOCKETS:
            a.hold("runtime_socket", {"path": path})
    for path in doc.get("socket_mounts") or []:
        a.hold("runtime_socket", {"path": path, "mounted": True})


def _hex(value: Any) -> int:
    try:
        return int(str(value), 16)
    except ValueError:
        return 0


def _privileges(doc: dict[str, Any], a: Assessment) -> None:
    uid = (doc.get("uid") or [None, None])
    caps = doc.get("caps") or {}
    permitted = _hex(caps.get("CapPrm"))
    regain = doc.get("regain") or {}
    if not regain:
        a.unmeasured["setuid_root"] = a.unmeasured["ambient_raise"] = (
            "the probe reported no regain attempt")
    if uid[0] not in (None, 0) and regain.get("setuid0_ret") == 0:
        a.hold("setuid_root", {"uid_before": uid[0], "uid_after": regain.get("uid_after")})
    if regain.get("ambient_raise_ret") == 0 and not regain.get("ambient_cap_was_permitted"):
        a.hold("ambient_raise", {"cap": regain.get("ambient_cap"),
                                 "CapAmb_after": regain.get("CapAmb_after")})
    for path, name in (("/probe-suid", "suid_exec_gains"), ("/probe-fcap", "fcap_exec_gains")):
        run = (doc.get("exec") or {}).get(path) or {}
        if not run.get("present"):
            a.unmeasured[name] = f"{path} is not in the image"
            continue
        try:
            child = json.loads(run.get("output") or "")
        except json.JSONDecodeError:
            a.unmeasured[name] = f"{path} printed no JSON: {run.get('output')!r:.200}"
            continue
        if "exec_errno" in child:
            continue  # the kernel refused the exec: nothing was gained
        child_uid = child.get("uid") or [None, None]
        gained = _hex((child.get("caps") or {}).get("CapEff")) & ~permitted
        gained |= _hex((child.get("caps") or {}).get("CapPrm")) & ~permitted
        if gained or (uid[1] not in (None, 0) and child_uid[1] == 0):
            a.hold(name, {"euid_before": uid[1], "euid_after": child_uid[1],
                          "CapPrm_before": caps.get("CapPrm"),
                          "caps_after": child.get("caps"), "gained_caps": f"{gained:#x}",
                          "no_new_privs": child.get("no_new_privs")})


def unexpected(held: Assessment, allowed: frozenset[str] | None) -> dict[str, list[Any]]:
    """Held preconditions outside ``allowed`` (None allows every one), with evidence."""
    if allowed is None:
        return {}
    return {name: ev for name, ev in sorted(held.held.items()) if name not in allowed}


def missing(held: Assessment, required: frozenset[str]) -> list[str]:
    """Required preconditions that do not hold."""
    return sorted(required - held.names())
