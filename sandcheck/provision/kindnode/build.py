"""The plain kind node image, built once from local parts and reused while its stamp holds.

Plain: Kubernetes, containerd with runc and a bridge CNI, no sandbox runtimes (those are
added to the running nodes, the same way as to a user's node image). The image is a
``docker load`` archive under ``cache_dir()/kind/node-TAG/``; TAG is the Kubernetes
version and a hash of everything the image is made from (pins, package list, kind's and
sandcheck's node files, ``BUILD_REVISION``), so changing any of them names a new image
and the next ``sandcheck provision --kind`` builds it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from sandcheck.host.command import run
from sandcheck.progress import Progress, quiet
from sandcheck.provision import pins
from sandcheck.provision.command import STDERR
from sandcheck.provision.gobuild import build, download, find_go, go_env, locked
from sandcheck.provision.kindnode import nodefiles, preload, rootfs
from sandcheck.provision.kindnode.ociarchive import write_archive
from sandcheck.provision.kubernetes import ETCD, KUBERNETES, KUBERNETES_MODULE
from sandcheck.provision.paths import cache_dir
from sandcheck.provision.tools import CONTAINERD17, CRI_TOOLS, KIND
from sandcheck.timeouts import TIMEOUTS

REPOSITORY = "sandcheck/kind-node"
BUILD_REVISION = 1
"""Bump when a build step changes in a way the identity does not show."""
NODE_BINARIES = {
    "usr/bin/kubeadm": (KUBERNETES, "kubeadm"),
    "usr/bin/kubelet": (KUBERNETES, "kubelet"),
    "usr/bin/kubectl": (KUBERNETES, "kubectl"),
    "usr/local/bin/containerd": (CONTAINERD17, "containerd"),
    "usr/local/bin/containerd-shim-runc-v2": (CONTAINERD17, "containerd-shim-runc-v2"),
    "usr/local/bin/ctr": (CONTAINERD17, "ctr"),
    "usr/local/bin/crictl": (CRI_TOOLS, "crictl"),
}
"""Where kind's base image and node build put each binary -> (Go build, binary).
containerd is 1.7: Debian 12's crun rejects the OCI 1.3.0 specs containerd 2.x writes."""
NODE_CONFIG = {
    "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "container=docker"],  # systemd's container interface
    "Entrypoint": ["/usr/local/bin/entrypoint", "/sbin/init"],
    "StopSignal": "SIGRTMIN+3",  # systemd halts on it (SIGTERM re-executes it)
}


def identity(mirror: str) -> dict[str, Any]:
    return {
        "kind": pins.KIND_VERSION,
        "kubernetes": pins.KUBERNETES_VERSION,
        "etcd": [pins.ETCD_VERSION, pins.KIND_NODE_ETCD_TAG],
        "pause": list(pins.KIND_NODE_PAUSE_TAGS),
        "containerd": pins.CONTAINERD17_VERSION,
        "crictl": pins.CRI_TOOLS_VERSION,
        "base": rootfs.base_identity(mirror),
        "node_files": hashlib.sha256("\0".join(nodefiles.content_identity()).encode()
                                     ).hexdigest(),
        "config": NODE_CONFIG,
        "revision": BUILD_REVISION,
    }


def node_image_ref(mirror: str | None = None) -> str:
    """The image's name, e.g. sandcheck/kind-node:v1.34.12-0123456789ab."""
    ident = identity(mirror or rootfs.debian_mirror())
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]
    return f"{REPOSITORY}:{pins.KUBERNETES_VERSION}-{key}"


def image_dir(ref: str) -> Path:
    return cache_dir() / "kind" / f"node-{ref.rsplit(':', 1)[1]}"


def cached_node_image(ref: str | None = None) -> Path | None:
    """The archive when its stamp names ``ref`` (default: the current pins' image)."""
    ref = ref or node_image_ref()
    where = image_dir(ref)
    try:
        stamp = json.loads((where / ".stamp.json").read_text())
    except (OSError, ValueError):
        return None
    archive = where / "image.tar"
    return archive if stamp.get("ref") == ref and archive.is_file() else None


def build_node_image(progress: Progress = STDERR) -> Path:
    """Build the node image archive once; returns its path (see the module docstring)."""
    mirror = rootfs.debian_mirror()
    ref = node_image_ref(mirror)
    if (found := cached_node_image(ref)) is not None:
        progress(f"kind node image {ref}: cached in {found.parent}")
        return found
    with locked(cache_dir() / "kind" / ".node-image.lock"):
        if (found := cached_node_image(ref)) is not None:
            return found
        return _build(ref, mirror, progress)


def _build(ref: str, mirror: str, progress: Progress) -> Path:
    kind_dir = cache_dir() / "kind"
    built = {tool.name: build(tool, progress) for tool in (KUBERNETES, ETCD, CONTAINERD17,
                                                          CRI_TOOLS, KIND)}
    go, env = find_go(), go_env()
    log = cache_dir() / "logs" / "kind-node-image.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    kind_module = download(go, env, KIND.module, KIND.version, log).dir
    kubernetes_module = download(go, env, KUBERNETES_MODULE, KUBERNETES.version, log).dir
    start = time.monotonic()
    base = rootfs.debootstrap_base(kind_dir, progress, mirror)
    work = kind_dir / f".build.tmp-{os.getpid()}"
    target = image_dir(ref)
    shutil.rmtree(work, ignore_errors=True)
    try:
        progress(f"kind node image {ref}: assembling in {work}")
        root = work / "rootfs"
        rootfs.unpack(base, root)
        rootfs.copy_kind_files(kind_module / "images" / "base" / "files", root)
        rootfs.apply_base_steps(root)
        rootfs.install_binaries(root, {rel: built[tool.name][name]
                                       for rel, (tool, name) in NODE_BINARIES.items()})
        ctr = built[CONTAINERD17.name]["ctr"]
        cri_base = json.loads(run([str(ctr), "oci", "spec"], timeout=TIMEOUTS.command).stdout)
        rootfs.add_node_files(root, cri_base, pins.KUBERNETES_VERSION)
        pause = preload.build_pause(kubernetes_module, work / "pause")
        images = preload.preloaded_images({**built[KUBERNETES.name], **built[ETCD.name]}, pause)
        archives = [preload.write_image(image, work) for image in images]
        names = preload.import_images(root, archives, built[CONTAINERD17.name]["containerd"],
                                      ctr, work)
        progress(f"kind node image: preloaded {', '.join(n for n in names if '@' not in n)}")
        layer = work / "layer.tar"
        rootfs.layer_tar(root, layer)
        shutil.rmtree(root)
        staged = work / "image"
        staged.mkdir()
        digest = write_archive(staged / "image.tar", layer, NODE_CONFIG, [ref],
                               "sandcheck sandcheck/provision/kindnode")
        seconds = round(time.monotonic() - start, 1)
        stamp = {"ref": ref, "digest": digest, "identity": identity(mirror),
                 "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 "build_seconds": seconds, "preloaded": names}
        (staged / ".stamp.json").write_text(json.dumps(stamp, indent=2) + "\n")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staged, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for old in kind_dir.glob("node-*"):  # an image of older pins is most of a gigabyte
        if old != target:
            shutil.rmtree(old, ignore_errors=True)
    progress(f"kind node image {ref}: built in {seconds:.0f}s into {target}")
    return target / "image.tar"


def load_node_image(dockerd, progress: Progress = quiet) -> str:
    """The node image in ``dockerd`` (a PrivateDockerd or anything with ``.docker(*args)``),
    built first if needed; returns its ref for ``kind create cluster --image``."""
    ref = node_image_ref()
    if dockerd.docker("image", "inspect", ref, check=False,
                      timeout=TIMEOUTS.api_call).returncode == 0:
        return ref
    archive = build_node_image(progress)
    start = time.monotonic()
    dockerd.docker("load", "-i", str(archive), timeout=TIMEOUTS.image_import)
    progress(f"kind node image {ref}: loaded in {time.monotonic() - start:.0f}s")
    return ref
