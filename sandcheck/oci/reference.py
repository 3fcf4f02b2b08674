"""Image references as ``push-image`` and ``--image`` take them (pure).

A registry host is the first path element when it has a dot or a colon or is
``localhost`` (the rule docker and containerd follow); a bare ``sandcheck/probe`` would
mean Docker Hub, which ``push-image`` refuses to guess.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from sandcheck.errors import UserError

DEFAULT_REPOSITORY = "sandcheck/probe"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


@dataclass(frozen=True)
class Target:
    """Where an image goes: ``host[:port]/repository[:tag]``."""

    host: str
    repository: str
    tag: str | None = None

    def with_tag(self, tag: str) -> Target:
        return Target(self.host, self.repository, tag)

    def __str__(self) -> str:
        return f"{self.host}/{self.repository}" + (f":{self.tag}" if self.tag else "")

    def by_digest(self, digest: str) -> str:
        return f"{self.host}/{self.repository}@{digest}"


def is_loopback(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 or ::1, with or without a port."""
    if host.startswith("["):
        name = host[1:].partition("]")[0]
    else:
        name = host.partition(":")[0] if host.count(":") == 1 else host
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def on_this_machine(host: str, local: frozenset[str] = frozenset()) -> bool:
    """Loopback, or one of the ``local`` hosts (a registry container of the run)."""
    return is_loopback(host) or host in local


def parse_target(text: str) -> Target:
    """``REGISTRY[/REPO][:TAG]`` -> Target; the repository defaults to sandcheck/probe."""
    if "@" in text:
        raise UserError(f"{text!r}: push to a tag, not a digest (the digest is the image's)")
    host, _, rest = text.partition("/")
    if not host or not ("." in host or ":" in host or host == "localhost"):
        raise UserError(f"{text!r}: name the registry first, e.g. registry.example.com/"
                        f"{DEFAULT_REPOSITORY} or localhost:5000 (a bare repository would "
                        "mean Docker Hub)")
    tag = None
    if ":" in rest.rsplit("/", 1)[-1]:
        rest, _, tag = rest.rpartition(":")
        if not _TAG.fullmatch(tag):
            raise UserError(f"{text!r}: {tag!r} is not a valid tag")
    repository = rest or DEFAULT_REPOSITORY
    if not _REPOSITORY.fullmatch(repository):
        raise UserError(f"{text!r}: {repository!r} is not a valid repository (lowercase "
                        "letters, digits, and . _ - / between them)")
    return Target(host, repository, tag)
