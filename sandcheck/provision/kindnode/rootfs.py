"""The node's root filesystem: a debootstrap of Debian, then what kind's
images/base/Dockerfile does, by hand, with kind's files from the Go module cache and
sandcheck's own builds instead of the binaries kind's Dockerfile downloads.

The debootstrap is the slow, network-bound part (about a minute); it is kept as a tar in
the cache, keyed by the suite, the mirror and the package list, so a change to any later
step reuses it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path

from sandcheck.errors import UserError
from sandcheck.host.command import run
from sandcheck.progress import Progress
from sandcheck.provision import pins
from sandcheck.provision.kindnode import nodefiles
from sandcheck.timeouts import TIMEOUTS

DEFAULT_MIRROR = "http://deb.debian.org/debian"
# kind's package list (images/base/Dockerfile) without the storage-test, rootless and
# compression extras, plus runc and the CNI plugins its Dockerfile builds from source.
NODE_PACKAGES = ("systemd", "systemd-sysv", "conntrack", "iptables", "nftables", "iproute2",
                 "ethtool", "util-linux", "mount", "kmod", "libseccomp2", "e2fsprogs", "bash",
                 "ca-certificates", "curl", "jq", "procps", "runc",
                 "containernetworking-plugins")
# What clean-install (kind's apt wrapper) deletes after installing, and /dev (docker
# makes its own).
CLEANED = ("var/cache/apt/archives", "var/cache/debconf", "var/lib/apt/lists", "var/log",
           "tmp", "var/tmp", "usr/share/doc", "usr/share/doc-base", "usr/share/man",
           "usr/share/local", "dev")
TAR_FLAGS = ("--numeric-owner", "--xattrs", "--xattrs-include=*")
SCRIPT_DIRS = ("usr/local/bin", "kind/bin")
"""kind's Dockerfile copies these 0755, every other file 0644."""
WANTS_CLEARED = ("lib/systemd/system/multi-user.target.wants",
                 "etc/systemd/system/*.wants", "lib/systemd/system/local-fs.target.wants",
                 "lib/systemd/system/basic.target.wants")


def debian_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The Debian mirror apt uses on this host (deb822 or one-line sources); the public
    one when apt names none."""
    files = [sources / "sources.list", *sorted((sources / "sources.list.d").glob("*"))]
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        for uri in re.findall(r"^URIs:\s*(\S+)", text, re.M) + re.findall(
                r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)", text, re.M):
            if uri.rstrip("/").endswith("/debian"):
                return uri.rstrip("/")
    return DEFAULT_MIRROR


def base_identity(mirror: str) -> dict[str, object]:
    return {"suite": pins.KIND_NODE_DEBIAN_SUITE, "mirror": mirror,
            "packages": sorted(NODE_PACKAGES), "cleaned": sorted(CLEANED)}


def debootstrap_base(cache: Path, progress: Progress, mirror: str | None = None) -> Path:
    """The cached tar of a cleaned debootstrap of the pinned suite (made when missing)."""
    mirror = mirror or debian_mirror()
    ident = base_identity(mirror)
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]
    tar = cache / f"debootstrap-{pins.KIND_NODE_DEBIAN_SUITE}-{key}.tar"
    if tar.is_file():
        return tar
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None:
        raise UserError("debootstrap not found: run `sandcheck provision --kind` "
                        "(installs Debian's debootstrap)")
    work = cache / f".debootstrap.tmp-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    progress(f"kind node image: debootstrap {pins.KIND_NODE_DEBIAN_SUITE} from {mirror} "
             "(about a minute, once)")
    try:
        run([debootstrap, "--variant=minbase", f"--include={','.join(NODE_PACKAGES)}",
             pins.KIND_NODE_DEBIAN_SUITE, str(work), mirror], timeout=TIMEOUTS.apt)
        for rel in CLEANED:
            for child in (work / rel).glob("*"):
                _remove(child)
        tmp = tar.with_name(f".{tar.name}.tmp-{os.getpid()}")
        run(["tar", *TAR_FLAGS, "-cf", str(tmp), "-C", str(work), "."], timeout=TIMEOUTS.command)
        os.replace(tmp, tar)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for old in cache.glob(f"debootstrap-{pins.KIND_NODE_DEBIAN_SUITE}-*.tar"):
        if old != tar:
            old.unlink()
    return tar


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def unpack(tar: Path, rootfs: Path) -> None:
    rootfs.mkdir(parents=True)
    run(["tar", *TAR_FLAGS, "-xf", str(tar), "-C", str(rootfs)], timeout=TIMEOUTS.command)


def copy_kind_files(files: Path, rootfs: Path) -> None:
    """images/base/files into the rootfs with the Dockerfile's modes."""
    for src in sorted(files.rglob("*")):
        rel = src.relative_to(files)
        dest = rootfs / rel
        if src.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
            dest.chmod(0o755)
            continue
        shutil.copyfile(src, dest)
        script = any(str(rel.parent) == d for d in SCRIPT_DIRS)
        dest.chmod(0o755 if script else 0o644)


def apply_base_steps(rootfs: Path) -> None:
    """The base Dockerfile's RUN steps: no units but kind's start at boot, no kernel
    messages in the journal, kind's services enabled, global-setting units masked."""
    for unit in (rootfs / "lib/systemd/system/sysinit.target.wants").glob(
            "systemd-tmpfiles-setup.service"):
        unit.unlink()
    for pattern in WANTS_CLEARED:
        for wants in rootfs.glob(pattern):
            for link in wants.glob("*"):
                link.unlink()
    for pattern in ("*udev*", "*initctl*"):
        for link in (rootfs / "lib/systemd/system/sockets.target.wants").glob(pattern):
            link.unlink()
    with open(rootfs / "etc/systemd/journald.conf", "a") as fh:
        fh.write("ReadKMsg=no\n")
    wants = rootfs / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    for unit in nodefiles.ENABLED_UNITS:  # each one's [Install] says multi-user.target
        _symlink(f"/etc/systemd/system/{unit}", wants / unit)
    for unit in nodefiles.MASKED_UNITS:
        _symlink("/dev/null", rootfs / "etc/systemd/system" / unit)
    (rootfs / "etc/kubernetes/manifests").mkdir(parents=True, exist_ok=True)


def _symlink(target: str, link: Path) -> None:
    link.unlink(missing_ok=True)
    link.symlink_to(target)


def install_binaries(rootfs: Path, placed: Mapping[str, Path]) -> None:
    """``placed``: path in the node (e.g. usr/bin/kubelet) -> built binary."""
    for rel, binary in placed.items():
        dest = rootfs / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(binary, dest)
        dest.chmod(0o755)


def add_node_files(rootfs: Path, cri_base: dict, kubernetes_version: str) -> None:
    """sandcheck's files (nodefiles.py), Debian's CNI plugins where containerd looks for
    them, kind's containerd config patched, and /kind/version."""
    etc = rootfs / "etc"
    (etc / "containerd/cri-base.json").write_text(json.dumps(nodefiles.cri_base_spec(cri_base),
                                                             indent=2) + "\n")
    config = etc / "containerd/config.toml"
    config.write_text(nodefiles.containerd_config(config.read_text()))
    (rootfs / nodefiles.CNI_TEMPLATE_PATH.lstrip("/")).write_text(nodefiles.CNI_TEMPLATE)
    (etc / "systemd/system" / nodefiles.NETNS_SYSCTL_UNIT_NAME).write_text(
        nodefiles.NETNS_SYSCTL_UNIT)
    init = rootfs / "sbin/init"
    init.unlink(missing_ok=True)  # systemd-sysv's link to systemd
    init.write_text(nodefiles.INIT)
    init.chmod(0o755)
    cni_bin = rootfs / "opt/cni/bin"
    cni_bin.mkdir(parents=True, exist_ok=True)
    for plugin in sorted((rootfs / "usr/lib/cni").iterdir()):
        _symlink(f"/usr/lib/cni/{plugin.name}", cni_bin / plugin.name)
    manifests = rootfs / "kind/manifests"
    manifests.mkdir(parents=True, exist_ok=True)
    (manifests / "default-cni.yaml").write_text(nodefiles.DEFAULT_CNI_MANIFEST)
    (rootfs / "kind/version").write_text(kubernetes_version)


def layer_tar(rootfs: Path, dest: Path) -> None:
    run(["tar", *TAR_FLAGS, "-cf", str(dest), "-C", str(rootfs), "."], timeout=TIMEOUTS.command)
