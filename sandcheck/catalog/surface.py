"""Host surfaces: how much of the host kernel a runtime's pods reach, as the catalog bounds it.

The measurement and its judgement are in sandcheck/judges/surface.py; this holds the
bound's type and the built-in runtimes' bounds, measured on the pinned releases.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
NATIVE_SURFACE = HostSurface(
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
GVISOR_SURFACE = HostSurface(
    executors=("runsc-sandbox", "runsc-gofer"), reachable_max=len(_GVISOR_REACHABLE),
    never=_RUNTIME_DEFAULT_DENIED | {"execve", "execveat", "socket", "connect", "open"},
    expected=_GVISOR_REACHABLE,
    notes="gVisor's own filters on the Sentry, Gofer and stubs: the workload's syscalls "
    "are served by the Sentry, which itself reaches these; a new gVisor that reaches more "
    "fails here naming them (update the set with the release)")

# gVisor on the KVM platform: the same Sentry and Gofers, but the Sentry's filters allow what
# driving vCPUs needs (ioctl on the VM's fds, KVM_RUN) instead of systrap's stubs, and it
# could not be measured here (this project's VM refuses the vCPUs' registers). The workload
# still reaches no host syscall of its own: only what no gVisor platform's filters allow
# (program execution, kernel modules, kexec, reboot, swap, accounting) is judged; the
# count is measured and recorded.
_NO_SENTRY_ALLOWS = frozenset("""
execve execveat init_module finit_module delete_module kexec_load kexec_file_load reboot
swapon swapoff acct
""".split())
GVISOR_KVM_SURFACE = HostSurface(
    executors=GVISOR_SURFACE.executors, never=_NO_SENTRY_ALLOWS,
    notes="gVisor's own filters on the Sentry and Gofers on the KVM platform: not measured "
    "yet on a host whose KVM runs gVisor, so only the syscalls that must stay unreachable "
    "are judged; record the reachable set from a KVM host to bound it like systrap's")

# Kata: the workload runs in a guest kernel; on the host, the hypervisor process (its argv0:
# QEMU, Cloud Hypervisor or Firecracker, as the Kata configuration names it) and virtiofsd
# execute the pod. Its memory is the VM's: the memory suite counts it among the pod's
# processes and the surface suite reads its filters.
KATA_SURFACE = HostSurface(
    executors=("qemu-system-x86_64", "qemu-kvm", "cloud-hypervisor", "firecracker"),
    notes="the VM's hypervisor is the pod's host process: what its seccomp filters allow "
    "(if the hypervisor installs any) is measured and recorded, not judged")
