"""containerd config.toml model and patcher (tomlkit, so comments and layout survive).

The tables CRI reads runtime handlers from differ by config schema, and a handler
written into another schema's table is silently ignored by containerd. This module
is the one place that knows which table is right, finds handlers in wrong ones, and
moves them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

import tomlkit
from tomlkit.items import Table
from tomlkit.toml_document import TOMLDocument

from sandcheck.clusters.catalog import Runtime
from sandcheck.clusters.errors import UserError

# schema version -> the path of the CRI plugin table whose containerd.runtimes holds handlers
CRI_RUNTIME_PLUGIN = {
    1: ("plugins", "cri"),
    2: ("plugins", "io.containerd.grpc.v1.cri"),
    3: ("plugins", "io.containerd.cri.v1.runtime"),
}
CONTAINERD_SERIES = {1: "containerd 1.x (legacy)", 2: "containerd 1.x", 3: "containerd 2.x"}


def runtimes_path(schema: int) -> tuple[str, ...]:
    return (*CRI_RUNTIME_PLUGIN[schema], "containerd", "runtimes")


def table_name(path: tuple[str, ...]) -> str:
    """Render a key path the way it appears in a TOML table header."""
    return ".".join(p if re.fullmatch(r"[A-Za-z0-9_-]+", p) else f'"{p}"' for p in path)


def parse(text: str, source: str = "config.toml") -> TOMLDocument:
    try:
        return tomlkit.parse(text)
    except Exception as exc:  # tomlkit has several parse error classes
        raise UserError(
            f"{source} is not valid TOML ({exc}): fix the syntax and run again") from None


def schema_of(doc: TOMLDocument, source: str = "config.toml") -> int:
    """The file's schema: its ``version`` key; absent means 1."""
    version = doc.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version not in (1, 2, 3):
        raise UserError(
            f"{source} declares version = {version!r}, which no containerd release reads: "
            "use 2 (containerd 1.x) or 3 (containerd 2.x)"
        )
    return int(version)


def containerd_version(binary: str) -> str:
    """What ``containerd --version`` says its release is ("1.7.35", "2.2.9", "1.6.20~ds1")."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    m = re.search(r"\sv?(\d+\.\d+\.\d+\S*)", out)
    return m.group(1) if m else out.strip()


def schema_for_version(version: str) -> int | None:
    """The schema a containerd release writes by default: 2 for 1.x, 3 for 2.x."""
    m = re.match(r"(\d+)\.", version)
    if not m:
        return None
    return 3 if int(m.group(1)) >= 2 else 2


def schema_for_containerd(binary: str = "containerd") -> int | None:
    """The schema the installed containerd writes by default."""
    exe = shutil.which(binary)
    if exe is None:
        return None
    try:
        return schema_for_version(containerd_version(exe))
    except subprocess.CalledProcessError:
        return None


def default_document(schema: int, containerd: str | None = None) -> TOMLDocument:
    """containerd's own defaults for the schema when a matching containerd is at hand."""
    exe = shutil.which(containerd or "containerd")
    if exe and schema_for_containerd(exe) == schema:
        proc = subprocess.run([exe, "config", "default"], capture_output=True, text=True,
                              timeout=60)
        if proc.returncode == 0 and proc.stdout.strip():
            doc = parse(proc.stdout, f"`{exe} config default`")
            if schema_of(doc) == schema:
                return doc
    doc = tomlkit.document()
    doc.add(tomlkit.comment(f"containerd config, schema {schema} ({CONTAINERD_SERIES[schema]})"))
    doc["version"] = schema
    return doc


@dataclass
class PatchReport:
    schema: int
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    moved: list[tuple[str, str, str]] = field(default_factory=list)
    """(handler, from table, to table) for handlers found in another schema's table."""
    kept: list[str] = field(default_factory=list)
    """User-set handler options that differ from the catalog's defaults and were kept."""
    files: dict[str, str] = field(default_factory=dict)
    """Runtime config files (name -> TOML text) to write next to config.toml."""

    def lines(self) -> list[str]:
        out = []
        for handler, src, dst in self.moved:
            out.append(
                f"moved handler {handler!r} from [{src}] (ignored by "
                f"{CONTAINERD_SERIES[self.schema]}) to [{dst}]"
            )
        for verb, names in (("added", self.added), ("updated", self.updated),
                            ("unchanged", self.unchanged)):
            if names:
                out.append(f"{verb}: {', '.join(names)}")
        out.extend(f"kept user setting {k}" for k in self.kept)
        return out


def _get(container: Any, path: tuple[str, ...]) -> Any:
    node = container
    for key in path:
        if not hasattr(node, "get"):
            return None
        node = node.get(key)
        if node is None:
            return None
    return node


def _ensure_table(doc: TOMLDocument, path: tuple[str, ...]) -> Table:
    node: Any = doc
    for i, key in enumerate(path):
        child = node.get(key)
        if child is None:
            child = tomlkit.table(is_super_table=i < len(path) - 1)
            node[key] = child
            child = node[key]
        elif not hasattr(child, "get"):
            raise UserError(
                f"[{table_name(path[: i + 1])}] is a {type(child).__name__}, not a table: "
                "fix that key in the config"
            )
        node = child
    return node


def _delete(doc: TOMLDocument, path: tuple[str, ...]) -> None:
    """Delete path[-1] and then every parent table that this left empty."""
    for depth in range(len(path), 0, -1):
        parent = _get(doc, path[: depth - 1]) if depth > 1 else doc
        if parent is None or path[depth - 1] not in parent:
            return
        child = parent[path[depth - 1]]
        if depth < len(path) and hasattr(child, "keys") and len(child.keys()) > 0:
            return
        del parent[path[depth - 1]]


def _plain(value: Any) -> Any:
    return value.unwrap() if hasattr(value, "unwrap") else value


def _set_if_different(table: Any, key: str, value: Any) -> bool:
    if key in table and _plain(table[key]) == value:
        return False
    table[key] = value
    return True


def find_handler(doc: TOMLDocument, handler: str) -> list[int]:
    """The schemas whose runtimes table holds ``handler``."""
    return [s for s in CRI_RUNTIME_PLUGIN if _get(doc, (*runtimes_path(s), handler)) is not None]


def patch(
    doc: TOMLDocument,
    runtimes: list[Runtime],
    config_dir: str,
    schema: int | None = None,
    default_runtime: str | None = None,
) -> PatchReport:
    """Add or update one handler per runtime in the table ``schema`` reads; in place.

    ``runtime_type`` is enforced; option values the user already set (a BinaryName at a
    custom path) are kept and reported; other keys are left alone. A handler found in
    another schema's table is moved, and its user keys come along.
    """
    file_schema = schema_of(doc)
    if schema is None:
        schema = file_schema
    elif "version" in doc and file_schema != schema:
        raise UserError(
            f"the file declares version = {file_schema} but --schema {schema} was asked: "
            f"drop --schema, or convert the file with `containerd config migrate` first"
        )
    if schema >= 2 and "version" not in doc:
        doc["version"] = schema
    report = PatchReport(schema=schema)
    target = runtimes_path(schema)
    for rt in runtimes:
        existing = _get(doc, (*target, rt.handler))
        for other in find_handler(doc, rt.handler):
            if other == schema:
                continue
            src = (*runtimes_path(other), rt.handler)
            carried = _plain(_get(doc, src))
            _delete(doc, src)
            report.moved.append((rt.handler, table_name(src), table_name((*target, rt.handler))))
            if existing is None:
                table = _ensure_table(doc, (*target, rt.handler))
                for k, v in carried.items():
                    table[k] = v
                existing = table
        was_new = existing is None
        table = _ensure_table(doc, (*target, rt.handler))
        changed = _set_if_different(table, "runtime_type", rt.runtime_type)
        for key, value in rt.handler_settings.items():
            changed |= _set_if_different(table, key, value)
        options = rt.containerd_options(config_dir)
        if options:
            opts = table.get("options")
            if opts is None:
                opts = tomlkit.table()
                table["options"] = opts
                opts = table["options"]
                changed = True
            for key, value in options.items():
                current = _plain(opts[key]) if key in opts else None
                if current not in (None, "") and current != value:
                    report.kept.append(f"{rt.handler}.options.{key}={current!r} "
                                       f"(catalog default {value!r})")
                    continue
                changed |= _set_if_different(opts, key, value)
        for fname, content in rt.config_files.items():
            report.files[fname] = tomlkit.dumps(content)
        if was_new:
            report.added.append(rt.handler)
        elif changed or any(m[0] == rt.handler for m in report.moved):
            report.updated.append(rt.handler)
        else:
            report.unchanged.append(rt.handler)
    if default_runtime is not None:
        containerd_table = _ensure_table(doc, (*CRI_RUNTIME_PLUGIN[schema], "containerd"))
        _set_if_different(containerd_table, "default_runtime_name", default_runtime)
    return report


def handler_table(doc: TOMLDocument, schema: int, handler: str) -> Table | None:
    """The live (editable) table of ``handler`` in the table ``schema`` reads."""
    return _get(doc, (*runtimes_path(schema), handler))


def handlers(doc: TOMLDocument, schema: int | None = None) -> dict[str, dict[str, Any]]:
    """Handler name -> its table (plain dict), from the table ``schema`` reads."""
    table = _get(doc, runtimes_path(schema or schema_of(doc)))
    return {k: _plain(v) for k, v in (table or {}).items()}
