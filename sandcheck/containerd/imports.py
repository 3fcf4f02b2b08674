"""containerd's ``imports``: which files make the effective config, in containerd's order
and with its merge rules, and where each runtime handler comes from.

containerd loads the main file, then each import (a path or glob, relative to the main
file's directory, matches in sorted order), breadth first, each file once. How an import
merges differs by series, and the difference decides what a drop-in must hold:

- 1.x (schema 1 and 2): an imported file's plugin section REPLACES the whole section of
  that plugin (measured with 1.7.35: a drop-in holding only a runsc handler drops the main
  file's runc handler and sandbox image). So a 1.x drop-in must carry the whole CRI section.
- 2.x (schema 3): tables merge key by key; a drop-in needs only what it changes.
"""

from __future__ import annotations

import copy
import glob
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from sandcheck.containerd import config as cc
from sandcheck.containerd import tomledit as te
from sandcheck.errors import UserError

DROP_IN_NAME = "99-sandcheck.toml"
"""Sorts after the usual ``NN-name.toml`` drop-ins: with 1.x's replace rule, last wins."""


@dataclass
class ConfigFile:
    path: Path
    text: str
    data: dict[str, Any]


def patterns(doc: Any, origin: Path) -> list[str]:
    """The file's import patterns as absolute paths (relative ones are the main file's)."""
    raw = te.plain(doc.get("imports")) if hasattr(doc, "get") else None
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(p, str) for p in raw):
        raise UserError(f"imports in {origin} must be a list of paths or globs")
    base = Path(origin).resolve().parent
    return [p if os.path.isabs(p) else str(base / p) for p in raw]


def resolve(main: Path, main_text: str, pending: dict[Path, str] | None = None
            ) -> list[ConfigFile]:
    """The main file and every file it imports, in containerd's load order.

    ``pending`` holds files about to be written (a new drop-in): their text is used, and
    they are matched by the patterns as if they were already on disk.
    """
    pending = {Path(p).resolve(): t for p, t in (pending or {}).items()}
    out: list[ConfigFile] = []
    seen: set[Path] = set()
    queue: list[tuple[Path, str | None]] = [(Path(main).resolve(), main_text)]
    while queue:
        path, text = queue.pop(0)
        if path in seen:
            continue
        seen.add(path)
        if text is None:
            text = pending.get(path)
        if text is None:
            try:
                text = path.read_bytes().decode("utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise UserError(f"imported file {path} cannot be read ({exc})") from None
        doc = cc.parse(text, str(path))
        out.append(ConfigFile(path, text, doc.unwrap()))
        for pattern in patterns(doc, path):
            queue.extend((m, None) for m in _matches(pattern, pending))
    return out


def _matches(pattern: str, pending: dict[Path, str]) -> list[Path]:
    found = {Path(p).resolve() for p in glob.glob(pattern) if os.path.isfile(p)}
    found |= {p for p in pending if PurePosixPath(p).match(pattern)}
    if not found and not glob.has_magic(pattern):
        # containerd globs only patterns with wildcards; a plain path must exist
        raise UserError(f"the config imports {pattern}, which does not exist, and containerd "
                        "refuses to start with a missing import: create it or remove it from "
                        "imports")
    return sorted(found, key=str)


def imports_file(doc: Any, origin: Path, target: Path) -> bool:
    """Whether ``doc`` (at ``origin``) imports the file ``target``."""
    return any(PurePosixPath(Path(target).resolve()).match(p) for p in patterns(doc, origin))


def merge(into: dict[str, Any], other: dict[str, Any], schema: int) -> dict[str, Any]:
    """``other`` merged over ``into`` the way the containerd series of ``schema`` does."""
    out = copy.deepcopy(into)
    for key, value in other.items():
        if key == "plugins" and schema <= 2 and isinstance(value, dict):
            plugins = out.setdefault("plugins", {})
            plugins.update(copy.deepcopy(value))  # 1.x: one plugin's section replaces all
        elif key == "imports":
            continue
        else:
            out[key] = _deep(out.get(key), value, deep=schema >= 3)
    return out


def _deep(old: Any, new: Any, deep: bool) -> Any:
    if isinstance(old, dict) and isinstance(new, dict):
        merged = dict(old)
        for k, v in new.items():
            merged[k] = _deep(old.get(k), v, deep) if deep else copy.deepcopy(v)
        return merged
    if isinstance(old, list) and isinstance(new, list):
        return old + new
    return copy.deepcopy(new)


def effective(files: list[ConfigFile], schema: int) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for f in files:
        data = merge(data, f.data, schema)
    return data


def handler_sources(files: list[ConfigFile], schema: int) -> dict[str, list[Path]]:
    """Handler -> the files that define it in the table ``schema`` reads (last one wins
    on 1.x; all of them merge on 2.x)."""
    sources: dict[str, list[Path]] = {}
    path = cc.runtimes_path(schema)
    for f in files:
        table = te.get(f.data, path)
        if schema <= 2 and te.get(f.data, path[:2]) is not None:
            # the file's CRI section replaces earlier ones, with their handlers
            sources = {}
        for handler in table or {}:
            sources.setdefault(handler, []).append(f.path)
    return sources
