"""The upstream specs the built-in runtimes are documented not to meet, each with its source.

Upstream suites (critest, Kubernetes' e2e) report such a spec as a deviation rather than
a failure (sandcheck/upstream/verdicts.py); the sources are long, so they live apart
from the entries that name them.
"""

from __future__ import annotations

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
GVISOR_CRITEST = {
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
GVISOR_E2E = {
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

# youki 0.7.0 (the pin, built with v1,v2,seccomp) behind containerd 1.7's runc shim, measured
# on the node backend; each cause read in the pinned crates' source (libcontainer 0.7.0).
_YOUKI_EXEC_SECCOMP = (
    "youki does not give a process exec'd into a container the container's seccomp filter: "
    "its tenant builder rebuilds the spec's linux section from namespaces, cgroupsPath, "
    "personality and time offsets only, dropping linux.seccomp (libcontainer "
    "src/container/tenant_builder.rs adapt_spec_for_tenant at the pin). The container's "
    "own process is filtered (Seccomp 2 in /proc/1/status), `crictl exec` and `kubectl "
    "exec` processes are not (Seccomp 0)")
_YOUKI_PROPAGATION = (
    "containerd 1.7 sets linux.rootfsPropagation to rshared/rslave for a bidirectional or "
    "host-to-container mount (pkg/cri/opts/spec_linux_opts.go), and youki accepts only "
    "shared, private, slave and unbindable there (UnknownRootfsPropagation(\"rshared\"), "
    "libcontainer src/rootfs/rootfs.rs at the pin), so the container does not start; "
    "youki does not apply per-mount propagation options either (youki-dev/youki#3604)")
YOUKI_CRITEST = {
    "Security Context SeccompProfilePath should support seccomp default on the container":
        _YOUKI_EXEC_SECCOMP + "; the spec reads Seccomp of an exec'd process",
    "Security Context SeccompProfilePath should support seccomp localhost profile on the "
    "container": _YOUKI_EXEC_SECCOMP + "; the spec execs chmod, which the profile denies",
    "Security Context SeccompProfilePath runtime should support an seccomp profile that "
    "blocks setting hostname with SYS_ADMIN":
        _YOUKI_EXEC_SECCOMP + "; the spec execs hostname, which the profile denies",
    "Container Mount Propagation runtime should support mount propagation mount with "
    "'rshared' should support propagation from host to container and vice versa":
        _YOUKI_PROPAGATION,
    "Container Mount Propagation runtime should support mount propagation mount with "
    "'rslave' should support propagation from host to container": _YOUKI_PROPAGATION,
}
# sandcheck's own checks youki does not meet: the probe runs exec'd into the pod, as
# `kubectl exec` does, and a pod's cgroup v1 hierarchies are writable.
YOUKI_CHECKS = {
    "isolation.seccomp_runtime_default": _YOUKI_EXEC_SECCOMP,
    "isolation.syscall_matrix_runtime_default":
        _YOUKI_EXEC_SECCOMP + ": the exec'd probe's syscalls meet the kernel, not the profile",
    "security.default_pod_shows_no_escape_precondition": (
        "on a cgroup v1 or hybrid host youki bind-mounts each of the pod's cgroup v1 "
        "hierarchies read-write (\"rw\", \"rbind\" in libcontainer src/rootfs/mount.rs "
        "setup_emulated_subsystem at the pin), ignoring the \"ro\" of the /sys/fs/cgroup mount "
        "the spec asks for (containerd and dockerd alike): root in a default pod can write "
        "its own cgroup's files (notify_on_release, and its own limits such as "
        "memory.limit_in_bytes), which runc and crun mount read-only"),
}
