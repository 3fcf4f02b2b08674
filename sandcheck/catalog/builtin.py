"""The runtimes sandcheck knows without a catalog file: runc, crun, youki, gVisor, Kata."""

from __future__ import annotations

from sandcheck.catalog.deviations import GVISOR_CRITEST, GVISOR_E2E
from sandcheck.catalog.escape import GVISOR_ESCAPE, NATIVE_ESCAPE
from sandcheck.catalog.runtime import Isolation, Runtime
from sandcheck.catalog.surface import GVISOR_SURFACE, NATIVE_SURFACE
from sandcheck.catalog.syscalls import (
    GVISOR_SYSCALLS,
    GVISOR_UNFILTERED,
    NATIVE_SYSCALLS,
    NATIVE_UNFILTERED,
    VM_SYSCALLS,
)


def _native(name: str, description: str, unavailable: str | None = None,
            packages: tuple[str, ...] = (), caveat: str | None = None) -> Runtime:
    """An OCI runtime binary driven through containerd's runc v2 shim, on the node's kernel."""
    return Runtime(
        name=name, handler=name, runtime_class=name, runtime_type="io.containerd.runc.v2",
        description=description, options={"BinaryName": name},
        binaries=(name, "containerd-shim-runc-v2"),
        isolation=Isolation(own_kernel=False, syscalls=NATIVE_SYSCALLS,
                            syscalls_unfiltered=NATIVE_UNFILTERED, escape=NATIVE_ESCAPE,
                            surface=NATIVE_SURFACE),
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
                syscalls=GVISOR_SYSCALLS,
                syscalls_unfiltered=GVISOR_UNFILTERED,
                # runsc drops CAP_NET_RAW unless started with --net-raw.
                default_capabilities=0x00000000A80405FB,
                # Devices the Sentry implements itself (FUSE, TUN) and its /dev/char dir.
                extra_devices=frozenset({"fuse", "net", "char"}),
                escape=GVISOR_ESCAPE,
                surface=GVISOR_SURFACE,
            ),
            upstream_deviations={"critest": GVISOR_CRITEST, "e2e": GVISOR_E2E},
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
            isolation=Isolation(own_kernel=True, syscalls=VM_SYSCALLS),
            unavailable="Kata Containers is not packaged for Debian 12 and its release "
            "artifacts are not on a package registry; install kata-deploy or the static "
            "tarball into /opt/kata",
        ),
    )
}
