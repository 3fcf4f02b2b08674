"""The runtimes sandcheck knows without a catalog file: runc, crun, youki, gVisor (systrap
and KVM platforms), Kata."""

from __future__ import annotations

from sandcheck.catalog.deviations import (
    GVISOR_CRITEST,
    GVISOR_E2E,
    YOUKI_CHECKS,
    YOUKI_CRITEST,
)
from sandcheck.catalog.escape import GVISOR_ESCAPE, NATIVE_ESCAPE
from sandcheck.catalog.runtime import Isolation, Runtime
from sandcheck.catalog.surface import (
    GVISOR_KVM_SURFACE,
    GVISOR_SURFACE,
    KATA_SURFACE,
    NATIVE_SURFACE,
    HostSurface,
)
from sandcheck.catalog.syscalls import (
    GVISOR_SYSCALLS,
    GVISOR_UNFILTERED,
    NATIVE_SYSCALLS,
    NATIVE_UNFILTERED,
    VM_SYSCALLS,
)


def _native(name: str, description: str, unavailable: str | None = None,
            packages: tuple[str, ...] = (), caveat: str | None = None,
            cargo_build: str | None = None, known_deviations: dict[str, str] | None = None,
            critest: dict[str, str] | None = None) -> Runtime:
    """An OCI runtime binary driven through containerd's runc v2 shim, on the node's kernel."""
    return Runtime(
        name=name, handler=name, runtime_class=name, runtime_type="io.containerd.runc.v2",
        description=description, options={"BinaryName": name},
        binaries=(name, "containerd-shim-runc-v2"),
        isolation=Isolation(own_kernel=False, syscalls=NATIVE_SYSCALLS,
                            syscalls_unfiltered=NATIVE_UNFILTERED, escape=NATIVE_ESCAPE,
                            surface=NATIVE_SURFACE),
        unavailable=unavailable, packages=packages, caveat=caveat, cargo_build=cargo_build,
        known_deviations=known_deviations or {},
        upstream_deviations={"critest": critest} if critest else {},
    )


def _gvisor(name: str, runtime_class: str, platform: str, description: str,
            surface: HostSurface, caveat: str, precondition: str | None = None) -> Runtime:
    """gVisor through its containerd shim, on one of the Sentry's platforms: the same runsc,
    its flags in a runsc config file of the handler's own (the shim reads [runsc_config]
    from ConfigPath and passes each key as a runsc flag)."""
    config = f"{name}.toml"
    return Runtime(
        name=name,
        handler=name,
        runtime_class=runtime_class,
        runtime_type="io.containerd.runsc.v1",
        description=description,
        options={"TypeUrl": "io.containerd.runsc.v1.options",
                 "ConfigPath": f"{{config_dir}}/{config}"},
        binaries=("runsc", "containerd-shim-runsc-v1"),
        go_build="gvisor",
        caveat=caveat,
        # oci-seccomp makes the Sentry apply the seccomp profile the pod asks for (gVisor
        # ignores it by default).
        config_files={config: {"runsc_config": {"platform": platform, "oci-seccomp": "true"}}},
        isolation=Isolation(
            own_kernel=True,
            dmesg_marker=r"Starting gVisor",
            syscalls=GVISOR_SYSCALLS,
            syscalls_unfiltered=GVISOR_UNFILTERED,
            # runsc drops CAP_NET_RAW unless started with --net-raw.
            default_capabilities=0x00000000A80405FB,
            # Devices the Sentry implements itself (FUSE, TUN) and its /dev/char dir.
            extra_devices=frozenset({"fuse", "net", "char"}),
            escape=GVISOR_ESCAPE,
            surface=surface,
        ),
        # The Sentry is the same whatever the platform: so are the documented differences.
        upstream_deviations={"critest": GVISOR_CRITEST, "e2e": GVISOR_E2E},
        precondition=precondition,
    )


_CONTAINERD17 = ("containerd >= 1.7 (the shim answers with the v2 bootstrap protocol, "
                 "which containerd 1.6 cannot read)")

BUILTIN: dict[str, Runtime] = {
    r.name: r
    for r in (
        _native("runc", "OCI reference runtime; namespaces and cgroups on the node's kernel",
                packages=("runc",)),
        _native("crun", "OCI runtime in C, driven through the runc v2 shim", packages=("crun",),
                caveat="containerd 2.x writes sandbox specs with ociVersion 1.3.0, which "
                "crun 1.8 (Debian 12) rejects: use containerd 1.7 with it"),
        _native("youki", "OCI runtime in Rust, driven through the runc v2 shim",
                cargo_build="youki",
                caveat="built from crates.io (the pin in sandcheck/provision/pins.py) with the "
                "features v1,v2,seccomp: v1 for cgroup v1 and hybrid hosts (libcgroups "
                "drives only the v1 hierarchies there), v2 for unified hosts, seccomp for "
                "the pod's profile (libseccomp); not systemd, since sandcheck's handlers use "
                "the cgroupfs driver (SystemdCgroup = false: the runc shim passes no "
                "--systemd-cgroup). Needs cargo with Rust >= 1.85 and Debian's "
                "libseccomp-dev and pkg-config to build",
                known_deviations=YOUKI_CHECKS, critest=YOUKI_CRITEST),
        _gvisor("runsc", "gvisor", "systrap",
                "gVisor: an application kernel (the Sentry) in user space", GVISOR_SURFACE,
                # systrap needs no /dev/kvm or ptrace.
                caveat=_CONTAINERD17),
        _gvisor("runsc-kvm", "gvisor-kvm", "kvm",
                "gVisor on its KVM platform: the Sentry runs as a guest of /dev/kvm",
                GVISOR_KVM_SURFACE, precondition="kvm",
                caveat=_CONTAINERD17 + "; a KVM whose vCPUs can be set up: before a run "
                "sandcheck boots `runsc --platform=kvm do true` and leaves runsc-kvm out, "
                "with the sandbox's own error, where that fails"),
        Runtime(
            name="kata",
            handler="kata",
            runtime_class="kata",
            runtime_type="io.containerd.kata.v2",
            description="Kata Containers: each pod in a lightweight virtual machine with a "
            "guest kernel of its own (QEMU, Cloud Hypervisor or Firecracker on KVM)",
            handler_settings={
                "privileged_without_host_devices": True,
                "pod_annotations": ["io.katacontainers.*"],
            },
            binaries=("containerd-shim-kata-v2", "kata-runtime"),
            overhead={"memory": "160Mi", "cpu": "250m"},
            precondition="kata",
            isolation=Isolation(own_kernel=True, syscalls=VM_SYSCALLS, surface=KATA_SURFACE),
            unavailable="Kata Containers is not packaged for Debian 12 and the Go module "
            "proxy refuses github.com/kata-containers/*: install its static release (or "
            "kata-deploy) and put containerd-shim-kata-v2 and kata-runtime on PATH",
        ),
    )
}
