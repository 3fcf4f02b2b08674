"""The one place that knows the backends: name -> factory, options, availability check and
leftover remover. The pytest options, the CLI (``sandcheck backends``, ``sandcheck run``),
``sandcheck cleanup`` and the README's table are read from here.

Adding a backend is one module under sandcheck/clusters/ plus one entry below. Entries name
their functions as ``module:attribute`` and are loaded on use, so choosing the node backend
never imports the Kubernetes client.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandcheck.clusters.base import Backend, BackendSettings, Capability
from sandcheck.errors import UserError

DEFAULT_BACKEND = "local"
_PACKAGE = "sandcheck.clusters"


@dataclass(frozen=True)
class Option:
    """A backend option: ``--flag`` on pytest and ``sandcheck run``; ``dest`` in
    BackendSettings.options."""

    flag: str
    help: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    """argparse keywords (type, action, default)."""

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class BackendEntry:
    name: str
    summary: str
    factory: str
    """``module:function(BackendSettings) -> Backend``; the function checks its options and
    raises UserError naming the flag and the fix."""
    options: tuple[Option, ...] = ()
    available: str | None = None
    """``module:function() -> str | None``: why the backend cannot run here (None: it can)."""
    leftovers: str | None = None
    """``module:function(workdir: Path) -> list[str]``: remove what a dead run of this
    backend left outside its work dir (bridges, cgroups, links); lines say what was done."""
    workdir_prefix: str | None = None
    """Work dirs of this backend under WORK_BASE are ``<prefix>-<run id>``."""

    def _load(self, ref: str) -> Callable[..., Any]:
        module, _, attr = ref.partition(":")
        return getattr(importlib.import_module(f"{_PACKAGE}.{module}"), attr)

    def open(self, settings: BackendSettings) -> Backend:
        return self._load(self.factory)(settings)

    def unavailable(self) -> str | None:
        return None if self.available is None else self._load(self.available)()

    def remove_leftovers(self, workdir: Path) -> list[str]:
        return [] if self.leftovers is None else self._load(self.leftovers)(workdir)


_CONTAINERD = Option("--containerd", "containerd binary for the node and local backends "
                     "(default: the one `sandcheck provision` built, else PATH's)")
MAX_PODS = Option("--max-pods", "local backend: kubelet's maxPods, the pods its node admits "
                  "(default 250, room for the density benchmark; kubelet's own is 110; at "
                  "most 253, the node's /24 pod network)", {"type": int, "default": None})

BACKENDS: dict[str, BackendEntry] = {e.name: e for e in (
    BackendEntry(
        name="local",
        summary="a single-node Kubernetes cluster of real components (etcd, kube-apiserver, "
                "controller-manager, scheduler, kubelet) on the node backend's containerd",
        factory="local.cluster:open_backend",
        options=(_CONTAINERD, MAX_PODS),
        available="local.binaries:unavailable",
        leftovers="local.leftovers:remove_leftovers",
        workdir_prefix="local",
    ),
    BackendEntry(
        name="kwok",
        summary="the local backend plus --kwok-nodes simulated nodes kept by kwok: pods pinned "
                "to them run at once and replay logs recorded on the real node",
        factory="kwok.cluster:open_backend",
        options=(_CONTAINERD,
                 Option("--kwok-nodes", "kwok backend: simulated nodes (default 10)",
                        {"type": int, "default": 10})),
        available="kwok.binary:unavailable",
        leftovers="local.leftovers:remove_leftovers",
        workdir_prefix="kwok",
    ),
    BackendEntry(
        name="node",
        summary="no Kubernetes: a private containerd driven over CRI with crictl, the calls "
                "kubelet makes",
        factory="node:open_backend",
        options=(_CONTAINERD,),
        available="node:unavailable",
        leftovers="node:remove_leftovers",
        workdir_prefix="node",
    ),
    BackendEntry(
        name="kubeconfig",
        summary="an existing cluster; its nodes are not touched and must hold the probe image",
        factory="kubeconfig:open_backend",
        options=(
            Option("--kubeconfig", "kubeconfig of an existing cluster", {"type": Path}),
            Option("--use-existing-runtimeclasses", "use the cluster's RuntimeClasses, "
                   "create none", {"action": "store_true"}),
        ),
    ),
    BackendEntry(
        name="docker",
        summary="no Kubernetes: containers of a Docker engine through testcontainers, the "
                "catalog's runtimes as --runtime (a private dockerd unless --docker-host)",
        factory="docker.backend:open_backend",
        options=(
            Option("--docker-host", "docker backend: use the running engine at this address "
                   "(no value: DOCKER_HOST, else unix:///var/run/docker.sock) instead of a "
                   "private dockerd; it is never reconfigured",
                   {"nargs": "?", "const": "env", "default": None}),
        ),
        available="docker.backend:unavailable",
        leftovers="docker.leftovers:remove_leftovers",
        workdir_prefix="docker",
    ),
    BackendEntry(
        name="kind",
        summary="a kind cluster on a private dockerd (sandcheck's offline node image unless "
                "--kind-image), the catalog's handlers added to its nodes",
        factory="kind.backend:open_backend",
        options=(
            Option("--kind-cluster", "kind backend: use this existing kind cluster (in the "
                   "engine at DOCKER_HOST); nothing is created or deleted"),
            Option("--kind-workers", "kind backend: worker nodes (default 1); sandboxing "
                   "runtimes go on the first worker only", {"type": int, "default": 1}),
            Option("--kind-image", "kind backend: node image (default: sandcheck's offline "
                   "image, built and loaded on demand)"),
            Option("--kind-name", "kind backend: name of the cluster to create (default "
                   "sandcheck-<run id>)"),
            Option("--kind-registry", "kind backend: serve the probe image from a local "
                   "registry on the cluster's network (kind's recipe; needs `sandcheck "
                   "provision --registry`) instead of `kind load`", {"action": "store_true"}),
        ),
        available="kind.leftovers:unavailable",
        leftovers="kind.leftovers:remove_leftovers",
        workdir_prefix="kind",
    ),
)}


def entry(name: str) -> BackendEntry:
    try:
        return BACKENDS[name]
    except KeyError:
        raise UserError(f"unknown backend {name!r}: choose one of "
                        f"{', '.join(BACKENDS)}") from None


def options() -> list[Option]:
    """Every backend option once (backends may share one, like --containerd)."""
    seen: dict[str, Option] = {}
    for e in BACKENDS.values():
        for opt in e.options:
            seen.setdefault(opt.flag, opt)
    return list(seen.values())


def for_workdir(workdir: Path) -> BackendEntry | None:
    """The backend whose work dirs are named like ``workdir``."""
    prefix = workdir.name.split("-", 1)[0]
    return next((e for e in BACKENDS.values() if e.workdir_prefix == prefix), None)


def open_backend(name: str, settings: BackendSettings) -> Backend:
    """The named backend, made (not started) from ``settings``; UserError for bad options."""
    backend = entry(name).open(settings)
    if Capability.KUBERNETES_API in backend.capabilities:
        # --api-qps, --api-burst, --api-max-in-flight: every Kubernetes backend's client
        backend.limit_api(settings.options)  # type: ignore[attr-defined]
    if settings.image_ref:
        if Capability.KUBERNETES_API not in backend.capabilities:
            raise UserError(f"--image applies to Kubernetes backends (nodes pull it); the "
                            f"{name} backend loads the probe image itself: drop --image")
        backend.use_image(settings.image_ref)  # type: ignore[attr-defined]
    return backend
