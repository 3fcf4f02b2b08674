"""Single-layer image archives written without a registry or a container engine.

One tar is both an OCI image layout (``ctr images import`` reads index.json) and a
``docker save`` archive (``docker load`` and ``kind load image-archive`` read
manifest.json). The layer is an uncompressed tar already on disk: the node image's layer is
most of a gigabyte, and compressing it would cost more time than the disk it saves.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar"
CREATED = "1970-01-01T00:00:00Z"
"""Every file and config carries the epoch, so equal inputs give equal digests."""
CHUNK = 4 << 20


@dataclass(frozen=True)
class FileEntry:
    """A file of a layer: its content from ``source`` (a path) or ``data``; with
    ``hardlink``, a hard link to that file of the layer instead (busybox's applets, as
    busybox's own image has them)."""

    path: str
    mode: int = 0o644
    source: Path | None = None
    data: bytes = b""
    hardlink: str = ""


def oci_arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _info(name: str, kind: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.mtime = kind, mode, size, 0
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def write_layer(dest: Path, files: Iterable[FileEntry], dirs: Mapping[str, int]) -> None:
    """A layer tar of ``dirs`` (path -> mode) and ``files``, in name order (hard links after
    every file, so each follows its target), owned by root."""
    entries: list[tuple[tarfile.TarInfo, FileEntry | None]] = [
        (_info(d, tarfile.DIRTYPE, mode), None) for d, mode in dirs.items()]
    for f in files:
        if f.hardlink:
            info = _info(f.path, tarfile.LNKTYPE, f.mode)
            info.linkname = f.hardlink
            entries.append((info, None))
            continue
        size = f.source.stat().st_size if f.source is not None else len(f.data)
        entries.append((_info(f.path, tarfile.REGTYPE, f.mode, size), f))
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, f in sorted(entries, key=lambda e: (e[0].islnk(), e[0].name)):
            if f is None:
                tar.addfile(info)
            elif f.source is not None:
                with open(f.source, "rb") as fh:
                    tar.addfile(info, fh)
            else:
                tar.addfile(info, io.BytesIO(f.data))


def image_config(diff_id: str, config: Mapping[str, Any], created_by: str) -> dict[str, Any]:
    """An image config of one layer; ``config`` holds Entrypoint, Env, StopSignal..."""
    return {
        "architecture": oci_arch(),
        "os": "linux",
        "created": CREATED,
        "config": dict(config),
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": CREATED, "created_by": created_by}],
    }


def write_archive(dest: Path, layer: Path, config: Mapping[str, Any], refs: Sequence[str],
                  created_by: str) -> str:
    """Write the archive of the image made of ``layer`` to ``dest`` (via a temp file and a
    rename); returns the manifest digest. ``refs`` are full names (repository:tag)."""
    layer_hex = file_sha256(layer)
    layer_size = layer.stat().st_size
    cfg = canonical_json(image_config(f"sha256:{layer_hex}", config, created_by))
    cfg_hex = hashlib.sha256(cfg).hexdigest()
    manifest = canonical_json({
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": f"sha256:{cfg_hex}", "size": len(cfg)},
        "layers": [{"mediaType": MT_LAYER, "digest": f"sha256:{layer_hex}",
                    "size": layer_size}],
    })
    manifest_hex = hashlib.sha256(manifest).hexdigest()
    descriptors = [{
        "mediaType": MT_MANIFEST, "digest": f"sha256:{manifest_hex}", "size": len(manifest),
        "platform": {"architecture": oci_arch(), "os": "linux"},
        # containerd reads the full name from its own key, other tools from the OCI one
        "annotations": {"io.containerd.image.name": ref,
                        "org.opencontainers.image.ref.name": ref},
    } for ref in refs]
    small = {
        "oci-layout": canonical_json({"imageLayoutVersion": "1.0.0"}),
        "index.json": canonical_json({"schemaVersion": 2, "mediaType": MT_INDEX,
                                      "manifests": descriptors}),
        "manifest.json": canonical_json([{"Config": f"blobs/sha256/{cfg_hex}",
                                          "RepoTags": list(refs),
                                          "Layers": [f"blobs/sha256/{layer_hex}"]}]),
        f"blobs/sha256/{cfg_hex}": cfg,
        f"blobs/sha256/{manifest_hex}": manifest,
    }
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            tar.addfile(_info("blobs", tarfile.DIRTYPE, 0o755))
            tar.addfile(_info("blobs/sha256", tarfile.DIRTYPE, 0o755))
            for name, data in small.items():
                tar.addfile(_info(name, tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))
            with open(layer, "rb") as fh:
                tar.addfile(_info(f"blobs/sha256/{layer_hex}", tarfile.REGTYPE, 0o644,
                                  layer_size), fh)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return f"sha256:{manifest_hex}"
