"""The runtime catalog: the one place that knows each runtime sandcheck can check.

For every runtime it holds what containerd needs to register the handler, what the
node must have installed, what a RuntimeClass for it looks like, and the isolation
profile a pod of that runtime is expected to show. Users add or override runtimes
from a TOML file (``--catalog FILE``) without editing code.

This package's face is ``Catalog`` (the built-in runtimes with a user's file over them,
and the selection of ``--runtimes``) and the names every caller needs with it: ``Runtime``,
``BUILTIN`` and ``classify``. The entries' parts are in the modules beside it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from sandcheck.catalog.builtin import BUILTIN
from sandcheck.catalog.runtime import Runtime
from sandcheck.catalog.syscalls import classify
from sandcheck.catalog.userfile import read_user_catalog
from sandcheck.errors import UserError

__all__ = ["BUILTIN", "Catalog", "Runtime", "classify"]


class Catalog:
    """Built-in runtimes plus the user's additions and overrides."""

    def __init__(self, runtimes: dict[str, Runtime]):
        self.runtimes = dict(runtimes)

    @classmethod
    def load(cls, extra: Path | None = None) -> Catalog:
        runtimes = dict(BUILTIN)
        if extra is not None:
            runtimes.update(read_user_catalog(extra, runtimes))
        return cls(runtimes)

    def digest(self) -> str:
        """The SHA-256 of the catalog as loaded (built-in entries and a user's file over
        them), of its canonical JSON: a signed certification names the expectations it was
        judged by, and two runs with this digest judged by the same ones."""
        entries = {name: dataclasses.asdict(rt) for name, rt in sorted(self.runtimes.items())}
        text = json.dumps(entries, sort_keys=True, separators=(",", ":"), default=_canonical)
        return hashlib.sha256(text.encode()).hexdigest()

    def names(self) -> list[str]:
        return list(self.runtimes)

    def get(self, name: str) -> Runtime:
        try:
            return self.runtimes[name]
        except KeyError:
            raise UserError(
                f"unknown runtime {name!r}: the catalog knows {', '.join(self.runtimes)}; "
                "add it to a catalog file passed with --catalog"
            ) from None

    def select(self, spec: str | list[str] | None,
               default: str = "runc,crun,runsc") -> list[Runtime]:
        """Resolve a comma-separated ``--runtimes`` value to catalog entries, in order."""
        names = spec if isinstance(spec, list) else (spec or default).split(",")
        names = [n.strip() for n in names if n.strip()]
        if not names:
            raise UserError("--runtimes is empty: name at least one runtime, e.g. runc,runsc")
        seen: dict[str, Runtime] = {}
        for n in names:
            seen.setdefault(n, self.get(n))
        return list(seen.values())


def _canonical(value: object) -> object:
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    raise TypeError(f"catalog value of type {type(value).__name__} has no canonical JSON")
