"""Upstream suites' images on nodes that reach no registry but one on this machine.

The stand-ins containers run are imported into the nodes' containerd under the suite's
names; the ones its specs pull by design are pushed to a registry on this machine (on
127.0.0.1 for a node on this host, a container on a kind cluster's network for its nodes),
and the nodes' registry host configuration sends every pull, of any registry host, there
(``_default``): nothing can be pulled from beyond this machine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from sandcheck.clusters.base import ImageNode, ServingRegistry
from sandcheck.oci.push import push_archive
from sandcheck.oci.reference import Target, on_this_machine
from sandcheck.progress import Progress, quiet
from sandcheck.upstream.criimages import StandIn, full_name, split_reference


@dataclass
class Served:
    """Where each name an upstream suite uses comes from on this node."""

    imported: list[str] = field(default_factory=list)
    pushed: dict[str, str] = field(default_factory=dict)
    """The suite's name -> the registry reference its pull is sent to."""
    hosts_file: str | None = None
    registry_endpoint: str = ""

    def as_evidence(self) -> dict:
        return {"imported": self.imported, "served by the registry": self.pushed,
                "registry (as the nodes reach it)": self.registry_endpoint,
                "registry host configuration": self.hosts_file}


def registry_target(registry_host: str, name: str) -> Target:
    """Where a pull of ``name`` lands once every host is routed to the registry: the same
    repository and tag on it."""
    _, repository, tag = split_reference(name)
    return Target(registry_host, repository, tag)


def serve(node: ImageNode, registry: ServingRegistry, archives: dict[StandIn, Path],
          progress: Progress = quiet) -> Served:
    """Import the images containers run and push the ones pulled (``pulled``, ``served``)."""
    served = Served(registry_endpoint=registry.endpoint)
    for stand_in, archive in archives.items():
        if not stand_in.pulled:
            node.import_image(archive)
            served.imported += [full_name(n) for n in stand_in.names]
        if not (stand_in.pulled or stand_in.served):
            continue
        for name in stand_in.names:
            target = registry_target(registry.host, name)
            push_archive(archive, target)
            served.pushed[full_name(name)] = str(target)
    served.hosts_file = node.route_registries(registry.endpoint)
    progress(f"upstream images: {len(served.imported)} imported, {len(served.pushed)} served "
             f"by the registry at {registry.endpoint}, every registry host routed there")
    return served


# How a pull's network attempt shows in containerd's and critest's logs, on a line about a
# pull: the registry URL (a resolve or fetch error), a DNS lookup of its host, or a dial of
# its address.
_PULL_LINE = re.compile(r"pull|resolv|fetch|/v2/|manifest|blob", re.IGNORECASE)
_ATTEMPT = re.compile(r'https?://(?P<url>[^/\s"\\]+)|lookup (?P<lookup>[\w.-]+)'
                      r'|dial tcp[46]? (?P<dial>\[?[0-9a-fA-F.:]+\]?:\d+)')


def remote_attempts(log_text: str, local: frozenset[str] = frozenset()) -> list[str]:
    """Pull attempts in a log that would leave this machine: registry URLs, lookups and
    dials of anything but a loopback address or a ``local`` host (the run's registry
    container), each host once with its first line."""
    found: dict[str, str] = {}
    for line in log_text.splitlines():
        if not _PULL_LINE.search(line):
            continue
        for m in _ATTEMPT.finditer(line):
            host = m.group("url") or m.group("lookup") or m.group("dial")
            if not on_this_machine(host, local) and host not in found:
                found[host] = line.strip()[:300]
    return [f"{host}: {line}" for host, line in found.items()]
