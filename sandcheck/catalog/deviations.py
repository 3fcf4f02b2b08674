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
