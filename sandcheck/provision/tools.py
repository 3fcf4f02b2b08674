"""What a pinned build is (``GoTool``, ``CargoTool``), where its binaries live, and the
tools built.

Data only: runtime code may import this to find a cached binary without importing the
build engine (gobuild.py), which turns a ``GoTool`` into binaries.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sandcheck.provision import pins
from sandcheck.provision.paths import cache_dir


@dataclass(frozen=True)
class SourcePatch:
    """A one-line change applied to a pinned module's source before building it."""

    path: str
    """File inside the module."""
    old: str
    """Text that must occur exactly once."""
    new: str
    why: str


@dataclass(frozen=True)
class BuildModule:
    """A generated module that requires the tool's module and builds its commands, for
    modules that can neither be ``go install``ed nor built in a copy of themselves."""

    render: Callable[[str, str], str]
    """(the tool module's go.mod, version) -> the build module's go.mod."""
    revision: int = 1
    """Part of the cache stamp: bump when ``render`` changes, so cached binaries rebuild."""


class CachedBuild:
    """What every pinned build shares: its label (name and pinned version) and the cache
    directory its binaries and stamp go to."""

    name: str
    version: str

    @property
    def label(self) -> str:
        return f"{self.name}-{self.version}"

    def target(self) -> Path:
        """The cache directory that holds this build's binaries and stamp."""
        return cache_dir() / "bin" / self.label


@dataclass(frozen=True)
class GoTool(CachedBuild):
    """Go programs of one pinned module. Every field but ``build_module.render`` is part of
    the cache stamp: changing one rebuilds the tool."""

    name: str
    module: str
    version: str
    packages: Mapping[str, str]
    """Name the binary is linked as -> Go main package."""
    tags: tuple[str, ...] = ()
    """Go build tags (e.g. to leave out cgo-only drivers)."""
    version_vars: tuple[str, ...] = ()
    """Package variables set to ``version`` at link time (what ``--version`` prints)."""
    link_vars: Mapping[str, str] = field(default_factory=dict)
    """More ``-X`` variables; ``{released}`` in a value is the release's publication time
    on the module proxy (so a rebuild prints the same build date)."""
    strip: bool = False
    """Link with ``-s -w`` (no symbol table, no DWARF)."""
    from_source: bool = False
    """Build inside a copy of the module (go.mod has directives ``go install`` refuses)."""
    patches: tuple[SourcePatch, ...] = ()
    build_module: BuildModule | None = None
    test_binary: bool = False
    """The programs are packages' tests (``go test -c``: critest is cri-tools' e2e suite
    compiled as one test binary); built inside a copy of the module, as ``go test`` cannot
    take ``PKG@VERSION``."""

    def binaries(self) -> dict[str, Path]:
        """Link name -> where the build puts that binary (built or not)."""
        return {link: self.target() / exe_name(pkg, self.test_binary)
                for link, pkg in self.packages.items()}


def exe_name(package: str, test_binary: bool = False) -> str:
    """The file ``go build``/``go install`` writes for a main package: its last path
    element, or the one before a major-version suffix (go.etcd.io/etcd/server/v3 -> server);
    ``go test -c`` adds ``.test``."""
    parts = package.rstrip("/").split("/")
    name = parts[-2] if len(parts) > 1 and re.fullmatch(r"v\d+", parts[-1]) else parts[-1]
    return f"{name}.test" if test_binary else name


GVISOR = GoTool(
    name="gvisor",
    module="gvisor.dev/gvisor",
    version=pins.GVISOR_VERSION,
    packages={
        "runsc": "gvisor.dev/gvisor/runsc",
        "containerd-shim-runsc-v1": "gvisor.dev/gvisor/shim",
    },
    version_vars=("gvisor.dev/gvisor/runsc/version.version",),
)

# The gVisor shim lowers its own oom_score_adj to -999 on start and fails the start when
# that is refused. Lowering it needs CAP_SYS_RESOURCE, which root lacks on some VMs and
# in some CI containers ("failed to set OOM Score on shim: ... permission denied").
# On such hosts the shim is built with that one write made best-effort; nothing else
# changes (runsc itself is the unpatched build above).
GVISOR_SHIM_OOM_TOLERANT = GoTool(
    name="gvisor-shim-oom-tolerant",
    module=GVISOR.module,
    version=GVISOR.version,
    packages={"containerd-shim-runsc-v1": "gvisor.dev/gvisor/shim"},
    patches=(
        SourcePatch(
            path="pkg/shim/v1/manager.go",
            old="oomScoreMax); err != nil {",
            new="oomScoreMax); err != nil && !os.IsPermission(err) {",
            why="tolerate EACCES when lowering the shim's oom_score_adj without CAP_SYS_RESOURCE",
        ),
    ),
)

CRI_TOOLS = GoTool(
    name="cri-tools",
    module="sigs.k8s.io/cri-tools",
    version=pins.CRI_TOOLS_VERSION,
    packages={"crictl": "sigs.k8s.io/cri-tools/cmd/crictl"},
    version_vars=("sigs.k8s.io/cri-tools/pkg/version.Version",),
)

# critest, cri-tools' CRI validation suite: a test binary (its Makefile runs
# `go test -c ./cmd/critest`), from the same pin as crictl.
CRITEST = GoTool(
    name="critest",
    module=CRI_TOOLS.module,
    version=CRI_TOOLS.version,
    packages={"critest": "sigs.k8s.io/cri-tools/cmd/critest"},
    version_vars=CRI_TOOLS.version_vars,
    test_binary=True,
)


def _containerd(module: str, version: str, from_source: bool) -> GoTool:
    """containerd, its runc shim and ctr. CGO_ENABLED=0: the cgo-only btrfs snapshotter is
    left out by tag."""
    return GoTool(
        name="containerd",
        module=module,
        version=version,
        packages={cmd: f"{module}/cmd/{cmd}" for cmd in
                  ("containerd", "containerd-shim-runc-v2", "ctr")},
        tags=("no_btrfs",),
        version_vars=(f"{module}/version.Version",),
        from_source=from_source,
    )


# containerd 2.2 still supports cgroup v1 hosts (deprecated in 2.2, kept until 2029).
CONTAINERD2 = _containerd("github.com/containerd/containerd/v2", pins.CONTAINERD2_VERSION,
                          from_source=False)

# containerd 1.7 drives every runtime here: it speaks the gVisor shim's v2 bootstrap
# protocol (1.6 does not) and writes ociVersion 1.1.0 specs that Debian's crun 1.8
# accepts (2.x writes 1.3.0, which crun 1.8 rejects). Its go.mod has exclude
# directives, so it is built from a copy of the module rather than `go install`.
CONTAINERD17 = _containerd("github.com/containerd/containerd", pins.CONTAINERD17_VERSION,
                           from_source=True)

# kind creates the clusters of the kind backend; `go install` builds it (about 30 s).
KIND = GoTool(
    name="kind",
    module="sigs.k8s.io/kind",
    version=pins.KIND_VERSION,
    packages={"kind": "sigs.k8s.io/kind"},
)

# kwok's controller: keeps the kwok backend's simulated nodes Ready and plays their pods'
# lifecycle, and serves their logs; `go install` builds it (about 4 minutes cold).
KWOK = GoTool(
    name="kwok",
    module="sigs.k8s.io/kwok",
    version=pins.KWOK_VERSION,
    packages={"kwok": "sigs.k8s.io/kwok/cmd/kwok"},
)

# CNCF Distribution's `registry`: an OCI registry on the loopback address (the kind
# backend's local registry, the push-image tests). Static (CGO_ENABLED=0), so the same
# binary runs on the host and as the only file of a container image.
REGISTRY = GoTool(
    name="distribution",
    module="github.com/distribution/distribution/v3",
    version=pins.DISTRIBUTION_VERSION,
    packages={"registry": "github.com/distribution/distribution/v3/cmd/registry"},
    version_vars=("github.com/distribution/distribution/v3/version.version",),
    strip=True,
)

# The ginkgo CLI: runs a compiled ginkgo suite (e2e.test) on several processes and merges
# their reports, as Kubernetes' hack/ginkgo-e2e.sh does.
GINKGO = GoTool(
    name="ginkgo",
    module="github.com/onsi/ginkgo/v2",
    version=pins.GINKGO_VERSION,
    packages={"ginkgo": "github.com/onsi/ginkgo/v2/ginkgo"},
)


@dataclass(frozen=True)
class CargoTool(CachedBuild):
    """A binary crate of crates.io at a pinned version, built by ``cargo install`` with the
    lock file it was published with (sandcheck/provision/cargobuild.py). Every field is part
    of the cache stamp: changing one rebuilds it."""

    name: str
    crate: str
    version: str
    executables: tuple[str, ...]
    """The executables the crate installs (``cargo install`` puts them in ``bin/``)."""
    features: tuple[str, ...] = ()
    """Cargo features; the crate's default features are always off (``--no-default-features``),
    so what is built is exactly what is named here."""
    apt_build_deps: tuple[str, ...] = ()
    """Debian packages the build needs (C libraries its -sys crates link, pkg-config)."""

    def binaries(self) -> dict[str, Path]:
        return {name: self.target() / name for name in self.executables}


# youki: an OCI runtime in Rust, registered like crun through containerd's runc v2 shim
# (BinaryName). Its seccomp support links libseccomp (libseccomp-sys finds it with
# pkg-config); the features are explained with the pin.
YOUKI = CargoTool(
    name="youki",
    crate="youki",
    version=pins.YOUKI_VERSION,
    executables=("youki",),
    features=pins.YOUKI_FEATURES,
    apt_build_deps=("libseccomp-dev", "pkg-config"),
)
