"""A catalog entry: one runtime, what registers and installs it, and its isolation profile.

The types only; the built-in entries are in builtin.py, a user's in userfile.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sandcheck.catalog.escape import EscapeProfile
from sandcheck.catalog.surface import HostSurface


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
    cargo_build: str | None = None
    """The pinned crates.io build that provides the runtime (a ``CargoTool`` name in
    sandcheck/provision/tools.py)."""
    precondition: str | None = None
    """A host precondition beyond the binaries, tried for real before the runtime is used
    (a name in sandcheck/provision/preconditions.py: ``kvm`` for gVisor's KVM platform,
    ``kata`` for Kata's host check); a runtime whose precondition fails is left out with
    the evidence, as one whose binaries are missing is."""
    caveat: str | None = None
    """What the runtime needs beyond its binaries; the provisioning report repeats it."""
    known_deviations: dict[str, str] = field(default_factory=dict)
    """sandcheck's own check (``isolation.seccomp_runtime_default``) -> the documented cause
    of this runtime not meeting it. Such a check's failed assertion is reported as a
    deviation (🔶: not a pass, and it fails nothing); one that passes says the declaration
    can go. The expectation itself stays what the runtime's class must show."""
    upstream_deviations: dict[str, dict[str, str]] = field(default_factory=dict)
    """Upstream suite (``critest``, ``e2e``) -> spec name -> the source documenting that this
    runtime does not meet it. Such a spec's failure is reported as a deviation, not as a pass
    or a failure (sandcheck/upstream/verdicts.py)."""

    def summary(self) -> dict[str, Any]:
        """What a report says of the runtime beside its measurements: its class and
        handler, the kernel between its workload and the host, the host processes that
        run the workload, and how it is made available."""
        kernel = {True: "own", False: "node", None: None}[self.isolation.own_kernel]
        surface = self.isolation.surface
        return {"handler": self.handler, "runtime_class": self.runtime_class,
                "description": self.description, "kernel": kernel,
                "executors": list(surface.executors) if surface else [],
                "precondition": self.precondition}

    def containerd_options(self, config_dir: str) -> dict[str, Any]:
        return {k: _fill(v, config_dir) for k, v in self.options.items()}


def _fill(value: Any, config_dir: str) -> Any:
    if isinstance(value, str):
        return value.replace("{config_dir}", config_dir.rstrip("/"))
    return value
