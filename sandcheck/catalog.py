"""The runtime catalog: the one place that knows each runtime sandcheck can check.

For every runtime it holds what containerd needs to register the handler, what the
node must have installed, what a RuntimeClass for it looks like, and the isolation
profile a pod of that runtime is expected to show. Users add or override runtimes
from a TOML file (``--catalog FILE``) without editing code.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import tomlkit

from sandcheck.errors import UserError
from sandcheck.judges.escape import PRECONDITIONS

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

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
_NATIVE_ESCAPE = EscapeProfile(
    privileged_required=frozenset({"cgroupfs_mountable", "proc_sys_writable",
                                   "core_pattern_writable", "block_device_present"}),
    notes="A privileged pod is the node: the node's /proc/sys and core_pattern are writable, "
    "cgroupfs mounts (with release_agent on cgroup v1), the node's block devices open. "
    "/sys is not required: in runc's privileged pods the pod network namespace's sysfs "
    "superblock stays read-only (crun's privileged pods remount it writable).",
)

# gVisor: every file below is the Sentry's own, so what holds there reaches no host kernel.
_SENTRY_OWN = frozenset({"proc_sys_writable", "sysrq_trigger_writable"})
_GVISOR_ESCAPE = EscapeProfile(
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


@dataclass(frozen=True)
class HostSurface:
    """How much of the host kernel a pod's workload reaches (sandcheck/judges/surface.py): which
    host processes execute it, and the bound on the syscalls their seccomp filters allow."""

    executors: tuple[str, ...]
    """``workload`` (the workload's own processes are host processes) or the argv0 names
    of the processes that run it (gVisor's Sentry and Gofer, a VM's hypervisor)."""
    reachable_max: int | None = None
    never: frozenset[str] = frozenset()
    """Syscalls that must stay unreachable (a native runtime: the RuntimeDefault denials)."""
    expected: frozenset[str] | None = None
    """The reachable set as measured for the pinned runtime: anything beyond is named."""
    notes: str = ""

    def describe(self) -> dict[str, Any]:
        return {"executors": list(self.executors), "reachable_max": self.reachable_max,
                "never": sorted(self.never),
                "expected": None if self.expected is None else len(self.expected),
                "notes": self.notes}


# containerd 1.7's RuntimeDefault profile (runc's and crun's containers alike), measured
# here: 304 of the 382 x86_64 syscalls reachable (3 of them depending on arguments: clone,
# personality, socket), these 78 denied.
_RUNTIME_DEFAULT_DENIED = frozenset("""
_sysctl acct add_key afs_syscall bpf clock_settime clone3 create_module delete_module
fanotify_init file_getattr file_setattr finit_module fsconfig fsmount fsopen fspick
get_kernel_syms get_mempolicy getpmsg getxattrat init_module ioperm iopl kcmp
kexec_file_load kexec_load keyctl listmount listns listxattrat lookup_dcookie
lsm_get_self_attr lsm_list_modules lsm_set_self_attr mbind migrate_pages mount
mount_setattr move_mount move_pages mseal nfsservctl open_by_handle_at open_tree
open_tree_attr perf_event_open pidfd_getfd pivot_root process_madvise putpmsg query_module
quotactl quotactl_fd reboot removexattrat request_key security set_mempolicy
set_mempolicy_home_node setdomainname sethostname setns settimeofday setxattrat statmount
swapoff swapon sysfs syslog tuxcall umount2 unshare uselib userfaultfd ustat vhangup vserver
""".split())
_NATIVE_SURFACE = HostSurface(
    executors=("workload",), reachable_max=310, never=_RUNTIME_DEFAULT_DENIED,
    notes="the workload's processes are host processes under containerd's RuntimeDefault "
    "profile: everything but its denials reaches the host kernel")

# gVisor (the pinned go-branch build, systrap platform): the union over the Sentry
# (runsc-sandbox), the Gofers and the Sentry's stub processes, measured here.
_GVISOR_REACHABLE = frozenset("""
accept accept4 arch_prctl clock_gettime clone close dup dup3 epoll_create1 epoll_ctl
epoll_pwait eventfd2 exit exit_group fallocate fchmod fchmodat fchownat fcntl fdatasync
fgetxattr flistxattr fremovexattr fsetxattr fstat fstatfs fsync ftruncate futex getcpu
getdents64 getpid getppid getrandom getsockopt gettid gettimeofday io_destroy io_getevents
io_setup io_submit ioctl kill lgetxattr linkat listen llistxattr lremovexattr lseek
lsetxattr madvise membarrier memfd_create mincore mkdirat mknodat mlock mmap mprotect
munlock munmap nanosleep newfstatat openat openat2 ppoll prctl pread64 preadv preadv2
ptrace pwrite64 pwritev pwritev2 read readlinkat recvmmsg recvmsg renameat2
restart_syscall rt_sigaction rt_sigprocmask rt_sigreturn rt_tgsigqueueinfo
sched_getaffinity sched_yield seccomp sendmmsg sendmsg setitimer setpriority shutdown
sigaltstack socketpair statx symlinkat sync_file_range tee tgkill timer_create
timer_delete timer_settime tkill unlinkat utimensat wait4 waitid write writev
""".split())
_GVISOR_SURFACE = HostSurface(
    executors=("runsc-sandbox", "runsc-gofer"), reachable_max=len(_GVISOR_REACHABLE),
    never=_RUNTIME_DEFAULT_DENIED | {"execve", "execveat", "socket", "connect", "open"},
    expected=_GVISOR_REACHABLE,
    notes="gVisor's own filters on the Sentry, Gofer and stubs: the workload's syscalls "
    "are served by the Sentry, which itself reaches these; a new gVisor that reaches more "
    "fails here naming them (update the set with the release)")


@dataclass(frozen=True)
class Isolation:
    """What a workload inside a pod of this runtime is expected to observe."""

    own_kernel: bool | None
    """True: a kernel distinct from the node's (gVisor's Sentry, a Kata VM)."""
    dmesg_marker: str | None = None
    """Regex that the first kernel log lines must match (gVisor's boot banner)."""
    syscalls: dict[str, frozenset[str]] = field(default_factory=dict)
    """Under the RuntimeDefault seccomp profile: syscall -> conforming outcome classes.
    Names not listed are recorded, not judged."""
    syscalls_unfiltered: dict[str, frozenset[str]] = field(default_factory=dict)
    """With no seccomp filter and the default capabilities: the kernel's own answer."""
    default_capabilities: int = 0x00000000A80425FB
    """CapEff/CapBnd of a container that asks for nothing: containerd's default set
    (CHOWN DAC_OVERRIDE FSETID FOWNER MKNOD NET_RAW SETGID SETUID SETFCAP SETPCAP
    NET_BIND_SERVICE SYS_CHROOT KILL AUDIT_WRITE)."""
    extra_devices: frozenset[str] = frozenset()
    """Device nodes the runtime itself provides in /dev beyond the OCI defaults."""
    escape: EscapeProfile | None = None
    """Escape preconditions each kind of pod may show (None: recorded, not judged)."""
    surface: HostSurface | None = None
    """The host syscall surface bound (None: not measured)."""


@dataclass(frozen=True)
class Runtime:
    name: str
    handler: str
    runtime_class: str
    runtime_type: str
    description: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    """The handler's ``options`` table. ``{config_dir}`` in a string value is replaced by
    the directory the containerd config lives in (runsc's ConfigPath)."""
    handler_settings: dict[str, Any] = field(default_factory=dict)
    """Extra keys of the handler table (pod_annotations, privileged_without_host_devices)."""
    binaries: tuple[str, ...] = ()
    """Executables the node needs on containerd's PATH."""
    config_files: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Files written next to config.toml (runsc.toml), as TOML tables."""
    overhead: dict[str, str] | None = None
    """RuntimeClass overhead.podFixed."""
    scheduling: dict[str, Any] | None = None
    """RuntimeClass scheduling (nodeSelector, tolerations)."""
    isolation: Isolation = field(default_factory=lambda: Isolation(own_kernel=None))
    unavailable: str | None = None
    """Why this runtime cannot be provisioned by sandcheck, if it cannot."""
    packages: tuple[str, ...] = ()
    """Debian packages that provide the runtime; ``sandcheck provision`` installs them."""
    go_build: str | None = None
    """The pinned Go build that provides the runtime (a name in sandcheck/provision/tools.py)."""
    caveat: str | None = None
    """What the runtime needs beyond its binaries; the provisioning report repeats it."""
    upstream_deviations: dict[str, dict[str, str]] = field(default_factory=dict)
    """Upstream suite (``critest``, ``e2e``) -> spec name -> the source documenting that this
    runtime does not meet it. Such a spec's failure is reported as a deviation, not as a pass
    or a failure (sandcheck/upstream/verdicts.py)."""

    def containerd_options(self, config_dir: str) -> dict[str, Any]:
        return {k: _fill(v, config_dir) for k, v in self.options.items()}


def _fill(value: Any, config_dir: str) -> Any:
    if isinstance(value, str):
        return value.replace("{config_dir}", config_dir.rstrip("/"))
    return value


# Under RuntimeDefault, containerd's seccomp profile refuses these (a filter answers
# EPERM before any kernel sees the call), whatever runtime enforces it.
_FILTERED_DENIED = (
    "keyctl", "add_key", "bpf", "perf_event_open", "init_module", "kexec_load",
    "userfaultfd", "unshare_user", "unshare_mnt", "setns", "mount", "reboot", "syslog",
    "open_by_handle_at", "acct", "pivot_root", "swapon", "fsopen",
)
_NATIVE_SYSCALLS = {name: frozenset({"denied"}) for name in _FILTERED_DENIED}
# ptrace of one's own child is allowed by the default profile on kernels >= 4.8.
_NATIVE_SYSCALLS["ptrace_attach"] = frozenset({"ok"})

# No filter, default capabilities: what the node's kernel refuses for lack of a capability
# (CAP_SYS_ADMIN, CAP_SYS_BOOT, CAP_SYS_MODULE, ...). Calls whose answer depends on host
# sysctls (bpf, perf_event_open, syslog with dmesg_restrict=0) are recorded, not judged.
_NATIVE_UNFILTERED = {
    **{name: frozenset({"denied"}) for name in (
        "mount", "unshare_mnt", "setns", "reboot", "acct", "pivot_root", "swapon")},
    **{name: BLOCKED for name in ("init_module", "kexec_load")},
}

# gVisor under RuntimeDefault (with oci-seccomp): the same filter, enforced by the Sentry;
# io_uring is not offered at all.
_GVISOR_SYSCALLS = {**_NATIVE_SYSCALLS, "io_uring_setup": frozenset({"unsupported"})}
# gVisor with no filter: the Sentry's own answers, documented to differ from Linux's:
# no perf events, userfaultfd, io_uring or file handles; an emulated kernel log.
_GVISOR_UNFILTERED = {
    **{name: frozenset({"unsupported"}) for name in (
        "perf_event_open", "userfaultfd", "io_uring_setup", "open_by_handle_at")},
    **{name: BLOCKED for name in ("init_module", "kexec_load", "bpf")},
    **{name: frozenset({"denied"}) for name in ("mount", "reboot", "unshare_mnt", "setns")},
    "syslog": frozenset({"ok"}),
}

_VM_SYSCALLS: dict[str, frozenset[str]] = {}

# critest specs gVisor is documented not to meet, each with its source ("at the pin": the
# pinned gVisor's own source, read in the Go module cache). Measured with critest v1.37.0
# on the node backend; a spec that starts passing is reported so it can go.
_GVISOR_NETSTACK = ("gVisor serves the sandbox's sockets from its own network stack "
                    "(netstack) even for a host-network pod unless runsc runs with "
                    "--network=host: https://gvisor.dev/docs/user_guide/networking/")
_GVISOR_SYSCTLS = ("runsc applies fs.nr_open alone of a pod's sysctls (runsc/boot/loader.go at "
                   "the pin)")
_GVISOR_SUID = ("runsc ignores SUID/SGID bits unless started with --allow-suid, off by default "
                "(runsc/config/flags.go at the pin)")
_GVISOR_CRITEST = {
    "Streaming runtime should support streaming interfaces runtime should support "
    "portforward [Conformance]":
        "port forwarding dials the pod's network namespace, where nothing listens: the "
        "listener is inside gVisor's netstack (google/gvisor#3811, open; "
        "containerd/containerd#11338)",
    "Streaming runtime should support streaming interfaces runtime should support "
    "portforward in host network": _GVISOR_NETSTACK,
    "Security Context NamespaceOption runtime should support HostNetwork is true":
        _GVISOR_NETSTACK + "; the host's listeners are not in the sandbox's /proc/net",
    "Security Context NamespaceOption runtime should support HostIpc is true":
        "no host IPC namespace: System V IPC is the Sentry's own (google/gvisor#92: "
        "\"We don't support a host IPC option\")",
    "Security Context bucket runtime should support Privileged is true":
        "the spec runs brctl, which needs /sys/class/net; gVisor's sysfs has only "
        "/sys/class/power_supply (pkg/sentry/fsimpl/sys/sys.go at the pin)",
    "Security Context bucket runtime should support adding capability":
        "the spec runs brctl, which needs /sys/class/net; gVisor's sysfs has only "
        "/sys/class/power_supply (pkg/sentry/fsimpl/sys/sys.go at the pin)",
    "Security Context bucket runtime should support MaskedPaths":
        "runsc does not apply the OCI maskedPaths (google/gvisor#9245)",
    "Security Context bucket runtime should support ReadonlyPaths":
        "runsc does not apply the OCI readonlyPaths (google/gvisor#9245)",
    "Security Context NoNewPrivs should allow privilege escalation when false": _GVISOR_SUID,
    "PodSandbox runtime should support sysctls should support safe sysctls":
        _GVISOR_SYSCTLS + "; the Sentry's /proc/sys has no kernel.shm_rmid_forced "
        "(pkg/sentry/fsimpl/proc/tasks_sys.go)",
    "PodSandbox runtime should support sysctls should support unsafe sysctls":
        _GVISOR_SYSCTLS + "; the Sentry's /proc/sys has no fs/mqueue",
    "Container OOM runtime should output OOMKilled reason should terminate with exitCode "
    "137 and reason OOMKilled":
        "a container's memory limit does not OOM-kill it inside the sandbox, the pod's "
        "cgroup bounds the whole sandbox (google/gvisor#10980, #1967)",
    "Container Mount Readonly runtime should support readonly mounts should support "
    "non-recursive readonly mounts":
        "a read-only bind mount is read-only all the way down in gVisor: the gofer serves "
        "the host directory's submounts as part of it, without MS_REC semantics "
        "(google/gvisor#9140)",
    "Container Mount Propagation runtime should support mount propagation mount with "
    "'rshared' should support propagation from host to container and vice versa":
        "the sandbox's mount table lives in the Sentry; runsc refuses rshared "
        "(runsc/specutils/fs.go at the pin; google/gvisor#9324)",
}
# Kubernetes' e2e node conformance with runsc the node's default handler (pods without a
# RuntimeClass): the same documented differences, as e2e's specs meet them.
_GVISOR_E2E = {
    "[sig-node] Sysctls [LinuxOnly] [NodeConformance] should support sysctls "
    "[MinimumKubeletVersion:1.21] [Environment:NotInUserNS] [Conformance]":
        _GVISOR_SYSCTLS + "; the spec sets kernel.shm_rmid_forced",
    "[sig-node] Sysctls [LinuxOnly] [NodeConformance] should support sysctls with slashes as "
    "separator [MinimumKubeletVersion:1.23] [Environment:NotInUserNS]":
        _GVISOR_SYSCTLS + "; the spec sets kernel/shm_rmid_forced",
    "[sig-node] Security Context when creating containers with AllowPrivilegeEscalation "
    "should allow privilege escalation when true [LinuxOnly] [NodeConformance]":
        _GVISOR_SUID + "; the spec execs a setuid-root program expecting euid 0",
    "[sig-node] Security Context when creating containers with AllowPrivilegeEscalation "
    "should allow privilege escalation when not explicitly set and uid != 0 [LinuxOnly] "
    "[NodeConformance]":
        _GVISOR_SUID + "; the spec execs a setuid-root program expecting euid 0",
}



def _native(name: str, description: str, unavailable: str | None = None,
            packages: tuple[str, ...] = (), caveat: str | None = None) -> Runtime:
    """An OCI runtime binary driven through containerd's runc v2 shim, on the node's kernel."""
    return Runtime(
        name=name, handler=name, runtime_class=name, runtime_type="io.containerd.runc.v2",
        description=description, options={"BinaryName": name},
        binaries=(name, "containerd-shim-runc-v2"),
        isolation=Isolation(own_kernel=False, syscalls=_NATIVE_SYSCALLS,
                            syscalls_unfiltered=_NATIVE_UNFILTERED, escape=_NATIVE_ESCAPE,
                            surface=_NATIVE_SURFACE),
        unavailable=unavailable, packages=packages, caveat=caveat,
    )


BUILTIN: dict[str, Runtime] = {
    r.name: r
    for r in (
        _native("runc", "OCI reference runtime; namespaces and cgroups on the node's kernel",
                packages=("runc",)),
        _native("crun", "OCI runtime in C, driven through the runc v2 shim", packages=("crun",),
                caveat="containerd 2.x writes sandbox specs with ociVersion 1.3.0, which "
                "crun 1.8 (Debian 12) rejects: use containerd 1.7 with it"),
        _native("youki", "OCI runtime in Rust, driven through the runc v2 shim",
                unavailable="youki is not packaged for Debian 12; install it from its "
                "releases and put it on PATH"),
        Runtime(
            name="runsc",
            handler="runsc",
            runtime_class="gvisor",
            runtime_type="io.containerd.runsc.v1",
            description="gVisor: an application kernel (the Sentry) in user space",
            options={
                "TypeUrl": "io.containerd.runsc.v1.options",
                "ConfigPath": "{config_dir}/runsc.toml",
            },
            binaries=("runsc", "containerd-shim-runsc-v1"),
            go_build="gvisor",
            caveat="containerd >= 1.7 (the shim answers with the v2 bootstrap protocol, "
            "which containerd 1.6 cannot read)",
            config_files={"runsc.toml": {"runsc_config": {
                # systrap needs no /dev/kvm or ptrace; oci-seccomp makes the Sentry apply
                # the seccomp profile the pod asks for (gVisor ignores it by default).
                "platform": "systrap", "oci-seccomp": "true"}}},
            isolation=Isolation(
                own_kernel=True,
                dmesg_marker=r"Starting gVisor",
                syscalls=_GVISOR_SYSCALLS,
                syscalls_unfiltered=_GVISOR_UNFILTERED,
                # runsc drops CAP_NET_RAW unless started with --net-raw.
                default_capabilities=0x00000000A80405FB,
                # Devices the Sentry implements itself (FUSE, TUN) and its /dev/char dir.
                extra_devices=frozenset({"fuse", "net", "char"}),
                escape=_GVISOR_ESCAPE,
                surface=_GVISOR_SURFACE,
            ),
            upstream_deviations={"critest": _GVISOR_CRITEST, "e2e": _GVISOR_E2E},
        ),
        Runtime(
            name="kata",
            handler="kata-qemu",
            runtime_class="kata-qemu",
            runtime_type="io.containerd.kata-qemu.v2",
            description="Kata Containers: each pod in a lightweight QEMU/KVM virtual machine",
            options={
                "ConfigPath": "/opt/kata/share/defaults/kata-containers/configuration-qemu.toml",
            },
            handler_settings={
                "privileged_without_host_devices": True,
                "pod_annotations": ["io.katacontainers.*"],
            },
            binaries=("containerd-shim-kata-qemu-v2", "qemu-system-x86_64"),
            overhead={"memory": "160Mi", "cpu": "250m"},
            isolation=Isolation(own_kernel=True, syscalls=_VM_SYSCALLS),
            unavailable="Kata Containers is not packaged for Debian 12 and its release "
            "artifacts are not on a package registry; install kata-deploy or the static "
            "tarball into /opt/kata",
        ),
    )
}


class Catalog:
    """Built-in runtimes plus the user's additions and overrides."""

    def __init__(self, runtimes: dict[str, Runtime]):
        self.runtimes = dict(runtimes)

    @classmethod
    def load(cls, extra: Path | None = None) -> Catalog:
        runtimes = dict(BUILTIN)
        if extra is not None:
            runtimes.update(_read_user_catalog(extra, runtimes))
        return cls(runtimes)

    def names(self) -> list[str]:
        return list(self.runtimes)

    def get(self, name: str) -> Runtime:
        try:
            return self.runtimes[name]
        except KeyError:
            raise UserError(
                f"unknown runtime {name!r}: the catalog knows {', '.join(self.runtimes)}; "
                "add it to a catalog file passed with --catalog"
            ) from None

    def select(self, spec: str | list[str] | None,
               default: str = "runc,crun,runsc") -> list[Runtime]:
        """Resolve a comma-separated ``--runtimes`` value to catalog entries, in order."""
        names = spec if isinstance(spec, list) else (spec or default).split(",")
        names = [n.strip() for n in names if n.strip()]
        if not names:
            raise UserError("--runtimes is empty: name at least one runtime, e.g. runc,runsc")
        seen: dict[str, Runtime] = {}
        for n in names:
            seen.setdefault(n, self.get(n))
        return list(seen.values())


_FIELDS = {
    "handler", "runtime_class", "runtime_type", "description", "options", "handler_settings",
    "binaries", "config_files", "overhead", "scheduling", "own_kernel", "dmesg_marker",
    "syscalls", "syscalls_unfiltered", "default_capabilities", "extra_devices", "base",
    "packages", "escape", "surface", "upstream_deviations",
}
_ESCAPE_KEYS = {"default", "restricted", "privileged", "privileged_required", "notes"}


def _read_user_catalog(path: Path, known: dict[str, Runtime]) -> dict[str, Runtime]:
    """Parse a catalog file: ``[runtimes.NAME]`` tables; ``base = "runc"`` inherits."""
    try:
        doc = tomlkit.parse(Path(path).read_text()).unwrap()
    except FileNotFoundError:
        raise UserError(f"catalog file {path} does not exist: pass an existing file") from None
    except Exception as exc:  # tomlkit raises several parse error types
        raise UserError(f"catalog file {path} is not valid TOML ({exc}): fix the syntax") from None
    tables = doc.get("runtimes")
    if not isinstance(tables, dict) or not tables:
        raise UserError(f"catalog file {path} has no [runtimes.NAME] tables: add at least one")
    out: dict[str, Runtime] = {}
    for name, spec in tables.items():
        where = f"{path}: [runtimes.{name}]"
        if not isinstance(spec, dict):
            raise UserError(f"{where} must be a table")
        unknown = set(spec) - _FIELDS
        if unknown:
            raise UserError(
                f"{where} has unknown keys {sorted(unknown)}: allowed are {sorted(_FIELDS)}"
            )
        base_name = spec.get("base", name if name in known else None)
        if base_name is not None and base_name not in known and base_name not in out:
            raise UserError(f"{where}: base {base_name!r} is not a known runtime")
        if base_name is None and ("runtime_type" not in spec or "handler" not in spec):
            raise UserError(f"{where} is a new runtime: it needs handler and runtime_type")
        base = (out.get(base_name) or known.get(base_name)) if base_name else None
        out[name] = _merge(name, base, spec, where)
    return out


def _syscall_table(base: dict[str, frozenset[str]], extra: dict[str, Any] | None,
                   where: str) -> dict[str, frozenset[str]]:
    table = dict(base)
    for sc, outcomes in (extra or {}).items():
        outcomes = [outcomes] if isinstance(outcomes, str) else list(outcomes)
        bad = [o for o in outcomes if o not in OUTCOMES]
        if bad:
            raise UserError(f"{where}.{sc} has {bad}; outcomes are {', '.join(OUTCOMES)}")
        table[sc] = frozenset(outcomes)
    return table


def _escape_profile(base: EscapeProfile | None, spec: Any, where: str) -> EscapeProfile | None:
    """``[runtimes.NAME.escape]``: lists of precondition names; ``privileged = "any"``
    allows every one; keys not given are inherited."""
    if spec is None:
        return base
    if not isinstance(spec, dict):
        raise UserError(f"{where} must be a table with keys {sorted(_ESCAPE_KEYS)}")
    unknown = set(spec) - _ESCAPE_KEYS
    if unknown:
        raise UserError(f"{where} has unknown keys {sorted(unknown)}: allowed are "
                        f"{sorted(_ESCAPE_KEYS)}")
    values: dict[str, Any] = {}
    for key in ("default", "restricted", "privileged", "privileged_required"):
        if key not in spec:
            continue
        if key == "privileged" and spec[key] == "any":
            values[key] = None
            continue
        names = spec[key]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise UserError(f"{where}.{key} must be a list of precondition names")
        bad = sorted(set(names) - set(PRECONDITIONS))
        if bad:
            raise UserError(f"{where}.{key} names unknown preconditions {bad}; known are "
                            f"{', '.join(PRECONDITIONS)}")
        values[key] = frozenset(names)
    if "notes" in spec:
        values["notes"] = str(spec["notes"])
    return replace(base or EscapeProfile(), **values)


_SURFACE_KEYS = {"executors", "reachable_max", "never", "expected", "notes"}


def _host_surface(base: HostSurface | None, spec: Any, where: str) -> HostSurface | None:
    """``[runtimes.NAME.surface]``: executors, reachable_max, never and expected (lists of
    syscall names), notes; keys not given are inherited."""
    if spec is None:
        return base
    if not isinstance(spec, dict) or set(spec) - _SURFACE_KEYS:
        raise UserError(f"{where} must be a table with keys among {sorted(_SURFACE_KEYS)}")
    values: dict[str, Any] = {}
    for key in ("executors", "never", "expected"):
        if key in spec:
            names = spec[key]
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise UserError(f"{where}.{key} must be a list of names")
            values[key] = tuple(names) if key == "executors" else frozenset(names)
    if "reachable_max" in spec:
        if not isinstance(spec["reachable_max"], int) or spec["reachable_max"] < 0:
            raise UserError(f"{where}.reachable_max must be a count (0 or more)")
        values["reachable_max"] = spec["reachable_max"]
    if "notes" in spec:
        values["notes"] = str(spec["notes"])
    if base is None and "executors" not in values:
        raise UserError(f"{where} needs executors: \"workload\" or the argv0 names of the "
                        "host processes that run the pod's workload")
    return replace(base or HostSurface(executors=()), **values)


def _upstream_deviations(base: dict[str, dict[str, str]], spec: Any,
                         where: str) -> dict[str, dict[str, str]]:
    """``[runtimes.NAME.upstream_deviations.SUITE]``: spec name = source; added to the
    base's, an empty source removes an inherited one."""
    merged = {suite: dict(specs) for suite, specs in base.items()}
    if spec is None:
        return merged
    if not isinstance(spec, dict) or not all(isinstance(v, dict) for v in spec.values()):
        raise UserError(f"{where} must hold one table per suite, e.g. [{where.split(': ')[-1]}"
                        ".critest] with \"spec name\" = \"source\"")
    for suite, specs in spec.items():
        for name, source in specs.items():
            if not isinstance(source, str):
                raise UserError(f"{where}.{suite}: the source of {name!r} must be a string")
            if source:
                merged.setdefault(suite, {})[name] = source
            else:
                merged.get(suite, {}).pop(name, None)
    return merged


def _merge(name: str, base: Runtime | None, spec: dict[str, Any], where: str) -> Runtime:
    rt = base or Runtime(name=name, handler=spec["handler"], runtime_class=spec["handler"],
                         runtime_type=spec["runtime_type"])
    iso = rt.isolation
    caps = spec.get("default_capabilities", iso.default_capabilities)
    if isinstance(caps, str):
        try:
            caps = int(caps, 16)
        except ValueError:
            raise UserError(f"{where}: default_capabilities {caps!r} is not a hex mask "
                            "like \"00000000a80425fb\"") from None
    iso = replace(
        iso,
        own_kernel=spec.get("own_kernel", iso.own_kernel),
        dmesg_marker=spec.get("dmesg_marker", iso.dmesg_marker),
        syscalls=_syscall_table(iso.syscalls, spec.get("syscalls"), f"{where}: syscalls"),
        syscalls_unfiltered=_syscall_table(iso.syscalls_unfiltered,
                                           spec.get("syscalls_unfiltered"),
                                           f"{where}: syscalls_unfiltered"),
        default_capabilities=caps,
        extra_devices=frozenset(spec.get("extra_devices", iso.extra_devices)),
        escape=_escape_profile(iso.escape, spec.get("escape"), f"{where}: escape"),
        surface=_host_surface(iso.surface, spec.get("surface"), f"{where}: surface"),
    )
    options = copy.deepcopy(rt.options)
    options.update(spec.get("options") or {})
    deviations = _upstream_deviations(rt.upstream_deviations, spec.get("upstream_deviations"),
                                      f"{where}: upstream_deviations")
    merged = replace(
        rt,
        name=name,
        handler=spec.get("handler", rt.handler),
        runtime_class=spec.get("runtime_class", spec.get("handler", rt.runtime_class)),
        runtime_type=spec.get("runtime_type", rt.runtime_type),
        description=spec.get("description", rt.description),
        options=options,
        handler_settings={**rt.handler_settings, **(spec.get("handler_settings") or {})},
        binaries=tuple(spec.get("binaries", rt.binaries)),
        packages=tuple(spec.get("packages", rt.packages)),
        config_files={**rt.config_files, **(spec.get("config_files") or {})},
        overhead=spec.get("overhead", rt.overhead),
        scheduling=spec.get("scheduling", rt.scheduling),
        isolation=iso,
        unavailable=None if base is None or "binaries" in spec else rt.unavailable,
        upstream_deviations=deviations,
    )
    for label, value in (("handler", merged.handler), ("runtime_class", merged.runtime_class)):
        if not DNS1123_LABEL.match(value) or len(value) > 63:
            raise UserError(
                f"{where}: {label} {value!r} is not a DNS-1123 label: use lower-case "
                "letters, digits and '-', at most 63 characters"
            )
    return merged
