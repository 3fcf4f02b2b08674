"""The images a kind node runs before any image could be pulled, built from local binaries
and imported into the node's containerd content store at image build time.

kind's kubeadm config skips preflight, so kubeadm pulls nothing: the static pods name
registry.k8s.io images with IfNotPresent, and containerd's sandbox image is pause. With
kube-proxy and CoreDNS left out (see clusterconfig.py) that is the API server,
controller-manager, scheduler, etcd and pause: each one static binary in one layer.
kind's own build imports the same way (pkg/build/nodeimage/imageimporter.go: a containerd
in the build container, ``ctr images import --no-unpack`` with the pinned label); here the
pinned containerd 1.7 of the node runs on this host against the rootfs's
/var/lib/containerd, with a private state dir and socket and nothing but its content and
metadata plugins doing work.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sandcheck.errors import ComponentError, UserError
from sandcheck.host.command import run, tail
from sandcheck.provision import pins
from sandcheck.provision.kindnode.ociarchive import FileEntry, write_archive, write_layer
from sandcheck.timeouts import TIMEOUTS, wait_until

REGISTRY = "registry.k8s.io"
CONTROL_PLANE = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
PAUSE_CFLAGS = ("-Os", "-Wall", "-Werror", "-static")
"""build/pause/Makefile's flags (its VERSION define is added per tag)."""
IMAGE_DIRS = {"etc": 0o755, "tmp": 0o1777, "usr": 0o755, "usr/local": 0o755,
              "usr/local/bin": 0o755, "var": 0o755}
PASSWD = b"root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n"
IMPORT_FLAGS = ("--label=io.cri-containerd.pinned=pinned", "--all-platforms", "--no-unpack",
                "--digests")
"""kind's own import flags: pinned (kubelet's image GC keeps them), unpacked on first use."""
# Plugins the import does not need; CRI and NRI would listen and write outside the rootfs.
DISABLED_PLUGINS = ("io.containerd.grpc.v1.cri", "io.containerd.nri.v1.nri",
                    "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp",
                    "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.devmapper")


@dataclass(frozen=True)
class Preloaded:
    """One image of the node: its archive and the names kubeadm and containerd use."""

    refs: tuple[str, ...]
    binary: Path
    target: str
    """Where the binary is in the image."""


def preloaded_images(binaries: Mapping[str, Path], pause: Path) -> list[Preloaded]:
    """The control plane's images for ``binaries`` (kube-apiserver, ..., etcd)."""
    version = pins.KUBERNETES_VERSION
    images = [Preloaded((f"{REGISTRY}/{name}:{version}",), binaries[name],
                        f"usr/local/bin/{name}") for name in CONTROL_PLANE]
    images.append(Preloaded((f"{REGISTRY}/etcd:{pins.KIND_NODE_ETCD_TAG}",), binaries["etcd"],
                            "usr/local/bin/etcd"))
    images.append(Preloaded(tuple(f"{REGISTRY}/pause:{t}" for t in pins.KIND_NODE_PAUSE_TAGS),
                            pause, "pause"))
    return images


def build_pause(kubernetes_dir: Path, out: Path) -> Path:
    """Kubernetes' pause.c (build/pause/linux in the Kubernetes module) compiled static."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise UserError("gcc not found: run `sandcheck provision` (installs gcc and libc6-dev)")
    source = kubernetes_dir / "build" / "pause" / "linux" / "pause.c"
    tag = pins.KIND_NODE_PAUSE_TAGS[0]
    run([gcc, *PAUSE_CFLAGS, f"-DVERSION=v{tag}", "-o", str(out), str(source)],
        timeout=TIMEOUTS.command)
    return out


def write_image(image: Preloaded, workdir: Path) -> Path:
    """The archive of one preloaded image under ``workdir``."""
    name = image.target.rsplit("/", 1)[-1]
    layer = workdir / f"{name}.layer.tar"
    files = [FileEntry(image.target, 0o755, source=image.binary),
             FileEntry("etc/passwd", data=PASSWD)]
    write_layer(layer, files, IMAGE_DIRS)
    archive = workdir / f"{name}.tar"
    config = {"Entrypoint": [f"/{image.target}"],
              "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"]}
    write_archive(archive, layer, config, image.refs, "sandcheck kind node image preload")
    layer.unlink()
    return archive


def containerd_config(socket: Path, state_dir: Path) -> str:
    """A config for the import: nothing listens but the socket, nothing is written outside
    the given root and ``state_dir``."""
    disabled = ", ".join(f'"{p}"' for p in DISABLED_PLUGINS)
    return (f'version = 2\ndisabled_plugins = [{disabled}]\n'
            f'[grpc]\n  address = "{socket}"\n[ttrpc]\n  address = ""\n'
            f'[plugins."io.containerd.internal.v1.opt"]\n  path = "{state_dir / "opt"}"\n')


def import_images(rootfs: Path, archives: Sequence[Path], containerd: Path, ctr: Path,
                  workdir: Path) -> list[str]:
    """Import ``archives`` into the k8s.io namespace of ``rootfs``/var/lib/containerd;
    returns the image names containerd lists there afterwards."""
    state = workdir / "containerd-state"
    state.mkdir(parents=True, exist_ok=True)
    socket = state / "containerd.sock"
    config = state / "config.toml"
    config.write_text(containerd_config(socket, state))
    log_path = workdir / "containerd-import.log"
    root = rootfs / "var" / "lib" / "containerd"
    root.mkdir(parents=True, exist_ok=True)
    ctr_base = [str(ctr), "--address", str(socket), "--namespace", "k8s.io"]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([str(containerd), "--config", str(config), "--root", str(root),
                                 "--state", str(state / "run"), "--address", str(socket)],
                                stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        wait_until(lambda: _answers(proc, socket, ctr_base, log_path), TIMEOUTS.daemon_start,
                   f"containerd ({containerd}) for the image import",
                   interval=TIMEOUTS.ready_poll)
        for archive in archives:
            run([*ctr_base, "images", "import", *IMPORT_FLAGS, str(archive)],
                timeout=TIMEOUTS.image_import)
        return run([*ctr_base, "images", "list", "-q"], timeout=TIMEOUTS.command).stdout.split()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=TIMEOUTS.component_stop)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _answers(proc: subprocess.Popen, socket: Path, ctr_base: list[str],
             log_path: Path) -> bool | None:
    if proc.poll() is not None:
        raise ComponentError(f"containerd exited with {proc.returncode} before the image "
                             f"import:\n{tail(log_path.read_text(errors='replace'))}")
    if not socket.exists():  # ctr waits on a missing socket past its own timeout
        return None
    probe = run([*ctr_base, "version"], timeout=TIMEOUTS.api_call, check=False)
    return True if probe.returncode == 0 else None
