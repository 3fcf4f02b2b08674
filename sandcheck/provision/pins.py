"""Every pinned version sandcheck provisions, in one file.

A pin is part of a build's identity: changing one here invalidates that build's cache
stamp, so the next ``sandcheck provision`` rebuilds it.
"""

from __future__ import annotations

GO_MIN = (1, 22)
"""The oldest Go that builds every pinned module."""
RUST_MIN = (1, 85)
"""The oldest Rust that builds the pinned crates (youki 0.7's libcgroups says 1.85, and
its edition 2024 needs it): Debian 12's rustc 1.63 does not; rustup's stable does."""

CRI_TOOLS_VERSION = "v1.37.0"
GVISOR_VERSION = "v0.0.0-20260905035102-160fafc42237"
"""A pseudo-version of gVisor's go branch (the Go-buildable one)."""
CONTAINERD17_VERSION = "v1.7.35"
CONTAINERD2_VERSION = "v2.2.9"
YOUKI_VERSION = "0.7.0"
"""youki, from crates.io (not packaged for Debian 12)."""
YOUKI_FEATURES = ("v1", "v2", "seccomp")
"""youki has no default features. v1: on a cgroup v1 or hybrid host (this project's
machines: /sys/fs/cgroup is a tmpfs with cgroup2 at unified/) libcgroups drives the v1
hierarchies and nothing else; v2: a unified host (most CI runners); seccomp: the pod's
seccomp profile (RuntimeDefault) is applied, linked against Debian's libseccomp. Not
systemd: every backend here runs its handlers with the cgroupfs driver
(SystemdCgroup = false, so containerd's runc shim passes no --systemd-cgroup), and youki
uses its systemd manager only on a unified host when asked to."""
KUBERNETES_VERSION = "v1.34.12"
ETCD_VERSION = "v3.6.5"
"""Kubernetes 1.34 is released against etcd 3.6.5; Debian 12 ships 3.4."""

KIND_VERSION = "v0.33.0"
"""kind, built from the Go module proxy; its images/base files make the node image."""
KIND_NODE_DEBIAN_SUITE = "bookworm"
"""The node image's Debian release: its systemd (252) still runs on cgroup v1 hosts, which
newer systemd (trixie's 257, kind's own base) refuses."""
KIND_NODE_ETCD_TAG = "3.6.5-0"
"""The etcd image tag kubeadm v1.34 names for etcd 3.6.5 (cmd/kubeadm/app/constants)."""
KIND_NODE_PAUSE_TAGS = ("3.10.1", "3.10")
"""pause tags preloaded: kubeadm v1.34's and the sandbox image kind's containerd config names."""

KWOK_VERSION = "v0.8.0"
"""kwok, the kwok backend's simulated nodes: its controller binary (cmd/kwok), built from the
Go module proxy."""

DISTRIBUTION_VERSION = "v3.1.2"
"""CNCF Distribution's registry: the loopback registry of the kind backend and the
push-image tests."""
GINKGO_VERSION = "v2.21.0"
"""The ginkgo CLI that runs e2e.test's specs in parallel: the version Kubernetes v1.34.12's
go.mod requires (its test binaries speak that version's parallel protocol)."""

BUSYBOX_PACKAGE = "busybox"
"""Debian's dynamically linked busybox, unpacked by ``sandcheck provision --upstream``
(installing it would remove busybox-static, the probe image's). busybox-static is built as
a standalone shell: ``sh -c ls`` runs its ls applet without exec'ing /bin/ls, so a masked
/bin/ls never shows (critest's MaskedPaths spec). This build execs, as busybox's own image
does; the host's C library it links goes into the image with it."""
