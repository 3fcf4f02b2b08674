"""NODE_IMAGES on a kind cluster the run made: upstream suites' images in every node.

Archives go in with ``kind load image-archive`` (into each node's containerd, CRI's
namespace). Pulls are served by the cluster's registry container (``--kind-registry``'s,
started here when the run did not ask for it): every node's ``certs.d/_default/hosts.toml``
sends every registry host to it on the ``kind`` network. Only clusters the run made: a
user's cluster (``--kind-cluster``) keeps its own images and registry configuration.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sandcheck.clusters.kind.cli import Kind
from sandcheck.clusters.kind.registry import CERTS_DIR, KindRegistry, write_hosts
from sandcheck.containerd import hosts
from sandcheck.timeouts import TIMEOUTS

DEFAULT_HANDLER = "runc"
"""kind's node config: ``default_runtime_name``."""
_SHOW_HOSTS = (f'for f in {CERTS_DIR}/*/hosts.toml; do [ -f "$f" ] || continue; '
               'printf "\\n==> %s <==\\n" "$f"; cat "$f"; done')
_HEADER = re.compile(r"^==> (?P<path>.+) <==$", re.MULTILINE)


def hosts_files(listing: str) -> dict[str, str]:
    """``_SHOW_HOSTS``'s output -> host directory -> hosts.toml text (pure)."""
    parts = _HEADER.split(listing)
    return {Path(path).parent.name: text.strip() + "\n"
            for path, text in zip(parts[1::2], parts[2::2], strict=True)}


class KindImageNodes:
    """Every node of one kind cluster, for images and registry routes only."""

    default_handler = DEFAULT_HANDLER

    def __init__(self, engine: Any, kind: Kind, cluster: str,
                 registry: Callable[[], KindRegistry]):
        self.engine = engine
        self.kind = kind
        self.cluster = cluster
        self._registry = registry

    def _nodes(self) -> list[str]:
        return self.kind.nodes(self.cluster)

    def import_image(self, archive: Path) -> None:
        self.kind.run("load", "image-archive", str(archive), "--name", self.cluster,
                      timeout=TIMEOUTS.image_import)

    def serving_registry(self) -> KindRegistry:
        """The cluster's registry container (``--kind-registry``'s, or made now)."""
        return self._registry()

    def route_registries(self, server: str) -> str:
        return write_hosts(self.engine, self._nodes(), hosts.DEFAULT_HOST,
                           hosts.route_all_text(server))

    def registry_routes(self) -> dict[str, dict[str, list[str]]]:
        return {node: hosts.endpoints_of(hosts_files(self._exec(node, "sh", "-c", _SHOW_HOSTS)))
                for node in self._nodes()}

    def pull_logs(self) -> dict[str, str]:
        return {node: self._exec(node, "journalctl", "--no-pager", "-o", "cat", "-u",
                                 "containerd") for node in self._nodes()}

    def _exec(self, node: str, *argv: str) -> str:
        return self.engine.docker("exec", node, *argv, check=False,
                                  timeout=TIMEOUTS.api_call).stdout
