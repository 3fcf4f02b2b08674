"""``sandcheck provision``: install or build what the chosen runtimes need, once.

Every step is idempotent and cheap when already done: Debian packages are only installed
when missing, Go tools are reused from their cache stamp. What each runtime needs comes
from the catalog (its packages, its Go build, why it cannot be provisioned); this module
only composes the steps and reports what it did.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandcheck.catalog import Runtime
from sandcheck.errors import ComponentError, UserError
from sandcheck.progress import Progress
from sandcheck.provision import cargobuild
from sandcheck.provision.apt import apt_install, apt_unpack
from sandcheck.provision.command import STDERR
from sandcheck.provision.gobuild import build
from sandcheck.provision.hostprep import (
    CAP_SYS_RESOURCE,
    has_capability,
    prepare_cgroups_for_crun,
)
from sandcheck.provision.kindnode import build_node_image
from sandcheck.provision.kubernetes import AGNHOST, E2E, ETCD, KUBERNETES
from sandcheck.provision.links import install_links
from sandcheck.provision.paths import (
    containerd2_path_dir,
    containerd17_path_dir,
    path_dir,
    unpacked_dir,
    which,
)
from sandcheck.provision.pins import BUSYBOX_PACKAGE
from sandcheck.provision.preconditions import try_precondition
from sandcheck.provision.tools import (
    CONTAINERD2,
    CONTAINERD17,
    CRI_TOOLS,
    CRITEST,
    GINKGO,
    GVISOR,
    GVISOR_SHIM_OOM_TOLERANT,
    KIND,
    KWOK,
    REGISTRY,
    YOUKI,
    CargoTool,
)
from sandcheck.provision.versions import versions

# containerd 1.6 for `verify`; CNI plugins for pod networking; gcc, libc6-dev and
# busybox-static for the probe image; iproute2 and iptables for bridges; openssl for certs.
BASE_PACKAGES = ("containerd", "containernetworking-plugins", "iptables", "busybox-static",
                 "gcc", "libc6-dev", "iproute2", "openssl")

# The docker backend's engine; it brings Debian's containerd 1.6 and runc along.
DOCKER_PACKAGES = ("docker.io",)

# Debian's runsc (2022) runs containers by itself but ships no containerd shim: with it
# pods of the runsc handler cannot start under CRI, and the node tier skips them, naming
# the missing shim. Still better than nothing when the gVisor build fails.
GVISOR_FALLBACK_PACKAGE = "runsc"

# The kind node image: debootstrap makes its root filesystem, docker.io runs the nodes.
KIND_PACKAGES = ("debootstrap", "docker.io")

SHIM_OOM_NOTE = ("containerd-shim-runsc-v1 is built to tolerate a refused oom_score_adj "
                 "write (this host's root lacks CAP_SYS_RESOURCE)")

CARGO_TOOLS: dict[str, CargoTool] = {YOUKI.name: YOUKI}
"""The crates.io builds a catalog entry may name (``cargo_build``)."""


@dataclass
class Provisioned:
    """What ``provision`` did and where things are."""

    path_dir: Path
    containerd_path_dirs: dict[str, Path] = field(default_factory=dict)
    """containerd build ("1.7", "2") -> the dir to put first on PATH for that daemon."""
    runtimes: dict[str, dict[str, Any]] = field(default_factory=dict)
    binaries: dict[str, Path] = field(default_factory=dict)
    host_changes: list[str] = field(default_factory=list)
    versions: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "path_dir": str(self.path_dir),
            "containerd_path_dirs": {k: str(v) for k, v in self.containerd_path_dirs.items()},
            "runtimes": self.runtimes,
            "binaries": {k: str(v) for k, v in self.binaries.items()},
            "host_changes": self.host_changes,
            "versions": self.versions,
        }


def provision(
    runtimes: Sequence[Runtime],
    containerd2: bool = True,
    containerd17: bool | None = None,
    prepare_cgroups: bool = True,
    shim_oom_tolerant: bool | None = None,
    kubernetes: bool = False,
    docker: bool = False,
    kind: bool = False,
    kwok: bool = False,
    registry: bool = False,
    upstream: bool = False,
    progress: Progress = STDERR,
) -> dict[str, Any]:
    """Install or build what ``runtimes`` need; returns a report (see ``Provisioned``).

    crictl is always built; containerd 2.x when ``containerd2``; containerd 1.7 when
    ``containerd17`` (default: when gVisor is wanted, since Debian's containerd 1.6 cannot
    start its shim). The gVisor shim is the OOM-score tolerant build when
    ``shim_oom_tolerant`` (default: when this process lacks CAP_SYS_RESOURCE). With crun on
    a hybrid-cgroup host, ``prepare_cgroups`` moves cgroup2's controllers to v1 hierarchies
    and reports that in ``host_changes``. A runtime sandcheck cannot provision is reported
    unavailable with the catalog's reason; it is not an error. A runtime with a crates.io
    build (youki) is built with cargo once (Debian's build dependencies first); a failed
    build reports it unavailable with why. A runtime whose host precondition fails
    (runsc-kvm where this host's KVM cannot run gVisor) is reported unavailable with the
    precondition's reason and evidence. ``kubernetes`` also builds
    the pinned Kubernetes server binaries and etcd. ``docker`` installs Debian's docker.io
    for the docker backend's private dockerd. ``kind`` builds kind, the Kubernetes binaries
    (kubeadm among them) and the plain kind node image (after installing debootstrap and
    docker.io). ``kwok`` builds kwok's controller and what the local backend it extends
    needs (``kubernetes``). ``registry`` builds CNCF Distribution's registry (the kind backend's
    ``--kind-registry`` and the push-image tests). ``upstream`` builds critest (cri-tools'
    CRI validation suite, the pin crictl comes from), Kubernetes' e2e.test and agnhost (the
    Kubernetes pin), the ginkgo CLI that runs e2e.test in parallel, the registry their image
    specs pull from, and unpacks Debian's busybox for their images (suites/upstream).
    """
    result = Provisioned(path_dir=path_dir())
    apt_install([*BASE_PACKAGES, *(p for rt in runtimes for p in rt.packages),
                 *(DOCKER_PACKAGES if docker else ())], progress)
    built = dict(build(CRI_TOOLS, progress))
    wants_gvisor = any(rt.go_build == GVISOR.name for rt in runtimes)
    notes: list[str] = []
    if wants_gvisor:
        built.update(_gvisor(shim_oom_tolerant, notes, progress))
    failed = _crates(runtimes, built, progress)
    if kubernetes or kind or kwok:
        built.update(build(KUBERNETES, progress))
        built.update(build(ETCD, progress))
    if kind:
        apt_install(KIND_PACKAGES, progress)
        built.update(build(KIND, progress))
    if kwok:
        built.update(build(KWOK, progress))
    if upstream:
        built.update(build(CRITEST, progress))
        built.update(build(E2E, progress))
        built.update(build(AGNHOST, progress))
        built.update(build(GINKGO, progress))
        apt_unpack(BUSYBOX_PACKAGE, unpacked_dir(BUSYBOX_PACKAGE), progress)
    if registry or upstream:
        built.update(build(REGISTRY, progress))
    result.binaries.update(install_links(built, progress=progress))
    if kind:
        result.binaries["kind node image"] = build_node_image(progress)
    if containerd17 is None:
        containerd17 = wants_gvisor
    for key, wanted, tool, where in (
        ("1.7", containerd17, CONTAINERD17, containerd17_path_dir()),
        ("2", containerd2, CONTAINERD2, containerd2_path_dir()),
    ):
        if wanted:
            got = build(tool, progress)
            install_links(got, where, progress=progress)
            result.binaries.update({f"{k} ({tool.version})": v for k, v in got.items()})
            result.containerd_path_dirs[key] = where
    extra = [d for d in (containerd17_path_dir(),) if containerd17]
    for rt in runtimes:
        result.runtimes[rt.name] = entry = _runtime_entry(rt, extra, notes)
        if rt.name in failed and not entry["available"]:
            entry["reason"] = f"{entry['reason']}: {failed[rt.name]}"
        if not entry["available"]:
            progress(f"{rt.name} unavailable: {entry['reason']}")
    if prepare_cgroups and any("crun" in rt.binaries for rt in runtimes):
        result.host_changes.extend(prepare_cgroups_for_crun(progress=progress))
    result.versions = versions()
    return result.as_dict()


def _gvisor(shim_oom_tolerant: bool | None, notes: list[str],
            progress: Progress) -> dict[str, Path]:
    """runsc and its shim; the shim's tolerant build when asked for or needed."""
    try:
        built = dict(build(GVISOR, progress))
    except (ComponentError, UserError) as exc:
        progress(f"gVisor build failed ({str(exc).splitlines()[0]}); falling back to Debian's "
                 f"{GVISOR_FALLBACK_PACKAGE} package, which has no containerd-shim-runsc-v1")
        apt_install([GVISOR_FALLBACK_PACKAGE], progress)
        return {}
    if shim_oom_tolerant is None:
        shim_oom_tolerant = not has_capability(CAP_SYS_RESOURCE)
    if shim_oom_tolerant:
        built.update(build(GVISOR_SHIM_OOM_TOLERANT, progress))
        notes.append(SHIM_OOM_NOTE)
        progress(f"runsc: {SHIM_OOM_NOTE}")
    return built


def _crates(runtimes: Sequence[Runtime], built: dict[str, Path],
            progress: Progress) -> dict[str, str]:
    """The crates.io builds ``runtimes`` name, into ``built``; returns runtime -> why its
    build failed (no cargo, an old Rust, a failed compile: the runtime is reported
    unavailable with that, the rest of provisioning goes on)."""
    failed: dict[str, str] = {}
    for rt in runtimes:
        if rt.cargo_build is None:
            continue
        tool = CARGO_TOOLS.get(rt.cargo_build)
        if tool is None:
            failed[rt.name] = f"no crates.io build named {rt.cargo_build!r}"
            continue
        try:
            built.update(cargobuild.build(tool, progress))
        except (ComponentError, UserError) as exc:
            failed[rt.name] = f"its build failed: {str(exc).splitlines()[0]}"
            progress(f"{rt.name}: {failed[rt.name]}")
    return failed


def _runtime_entry(rt: Runtime, extra: list[Path], gvisor_notes: list[str]) -> dict[str, Any]:
    """Whether the runtime's binaries are there now and its host precondition holds, and
    if not why (the precondition's evidence with it)."""
    binaries = {name: which(name, extra) for name in rt.binaries or (rt.name,)}
    missing = [name for name, path in binaries.items() if path is None]
    entry: dict[str, Any] = {"available": not missing, "binaries": binaries}
    if not missing:
        outcome = try_precondition(rt)
        if outcome is not None:
            entry["precondition"] = outcome.as_dict()
            if not outcome.holds:
                entry.update(available=False, reason=outcome.reason)
    if missing:
        if rt.packages or rt.go_build or rt.cargo_build:
            entry["reason"] = f"{', '.join(missing)} not on PATH after provisioning"
        else:
            entry["reason"] = rt.unavailable or (
                f"sandcheck does not install {rt.name}: install it by hand and put "
                f"{', '.join(missing)} on PATH")
    notes = [rt.caveat] if rt.caveat else []
    if rt.go_build == GVISOR.name:
        notes += gvisor_notes
    if notes:
        entry["notes"] = notes
    return entry
