"""Images in containerd without a registry: the probe image's archive and refs, and the
import of an archive into a containerd namespace (CRI's is ``k8s.io``)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from sandcheck.errors import ComponentError
from sandcheck.timeouts import TIMEOUTS

REPOSITORY = "localhost/sandcheck/probe"
ALIAS_TAG = "latest"
PROBE_IMAGE = f"{REPOSITORY}:{ALIAS_TAG}"
"""The probe image's alias tag: pods name it with imagePullPolicy Never."""


class ProbeImageError(ComponentError):
    """Building or importing the probe image failed."""


@dataclass(frozen=True)
class ProbeImage:
    """A built probe image archive and how to refer to it."""

    archive: Path
    ref: str  # localhost/sandcheck/probe:<short manifest digest>
    digest: str  # manifest digest, "sha256:<hex>"
    probe_binary: Path
    alias: str = f"{REPOSITORY}:{ALIAS_TAG}"

    @property
    def refs(self) -> tuple[str, str]:
        return (self.ref, self.alias)


def import_into_containerd(
    image: ProbeImage,
    address: str,
    namespace: str = "k8s.io",
    ctr: str = "ctr",
    timeout: float = TIMEOUTS.image_import,
) -> None:
    """Import the archive with ctr, so a containerd without registry access
    (and the kubelet's CRI, in namespace k8s.io) can run the probe image."""
    import_archive(image.archive, address, namespace, ctr, timeout)


def import_archive(archive: Path, address: str, namespace: str = "k8s.io", ctr: str = "ctr",
                   timeout: float = TIMEOUTS.image_import) -> None:
    """Import an image archive (the probe image's, as built and cached) with ctr."""
    argv = [
        ctr,
        "--address",
        address,
        "-n",
        namespace,
        "images",
        "import",
        "--all-platforms",
        str(archive),
    ]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as e:
        raise ProbeImageError(f"{ctr!r} not found; install containerd to get ctr") from e
    except subprocess.TimeoutExpired as e:
        raise ProbeImageError(
            f"ctr images import timed out after {timeout}s: {' '.join(argv)}"
        ) from e
    if proc.returncode != 0:
        raise ProbeImageError(
            f"ctr images import failed (exit {proc.returncode}): {' '.join(argv)}\n"
            f"{proc.stderr.strip()}"
        )
