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

from sandcheck.catalog import Runtime
from sandcheck.containerd import tomledit as te
from sandcheck.containerd.tomledit import table_name
from sandcheck.errors import UserError
from sandcheck.timeouts import TIMEOUTS

# schema version -> the path of the CRI plugin table whose containerd.runtimes holds handlers
CRI_RUNTIME_PLUGIN = {
    1: ("plugins", "cri"),
    2: ("plugins", "io.containerd.grpc.v1.cri"),
    3: ("plugins", "io.containerd.cri.v1.runtime"),
}
CONTAINERD_SERIES = {1: "containerd 1.x (legacy)", 2: "containerd 1.x", 3: "containerd 2.x"}


def runtimes_path(schema: int) -> tuple[str, ...]:
    return (*CRI_RUNTIME_PLUGIN[schema], "containerd", "runtimes")


def parse(text: str, source: str = "config.toml") -> TOMLDocument:
    """The document of a config's text; a BOM and CRLF endings are put back by ``dumps``."""
    try:
        return tomlkit.parse(te.normalized(text))
    except Exception as exc:  # tomlkit has several parse error classes
        raise UserError(
            f"{source} is not valid TOML ({exc}): fix the syntax and run again") from None


def dumps(doc: TOMLDocument, like: str | None = None) -> str:
    """The document's text, with the line endings and BOM of ``like`` (the file it came
    from), so a CRLF file stays CRLF throughout."""
    return te.in_style_of(tomlkit.dumps(doc), like)


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
                         timeout=TIMEOUTS.tool_query, check=True).stdout
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
                              timeout=TIMEOUTS.tool_query)
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
    notes: list[str] = field(default_factory=list)
    changed: bool = True
    """Whether the data changed; when not, the file's text is left exactly as it was
    (tomlkit's own round trip can move indentation)."""

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
        return out + self.notes


def _set_if_different(table: Any, key: str, value: Any) -> bool:
    if key in table and te.plain(table[key]) == value:
        return False
    te.put(table, key, value)
    return True


def find_handler(doc: Any, handler: str) -> list[int]:
    """The schemas whose runtimes table holds ``handler``."""
    return [s for s in CRI_RUNTIME_PLUGIN if te.get(doc, (*runtimes_path(s), handler)) is not None]


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

    The edit is made twice, on the document and on its plain data, and a strict parser
    must read the rendered document back as the edited plain data: a layout that tomlkit
    would render at a different key path is refused with that path, never written.
    """
    file_schema = schema_of(doc)
    if schema is None:
        schema = file_schema
    elif "version" in doc and file_schema != schema:
        raise UserError(
            f"the file declares version = {file_schema} but --schema {schema} was asked: "
            f"drop --schema, or convert the file with `containerd config migrate` first"
        )
    before = doc.unwrap()
    reference = doc.unwrap()
    _edit(reference, runtimes, config_dir, schema, default_runtime)
    report = _edit(doc, runtimes, config_dir, schema, default_runtime)
    _check_rendering(doc, reference)
    report.changed = reference != before
    return report


def render(doc: TOMLDocument, report: PatchReport, original: str | None) -> str:
    """The text to write: the original byte for byte when the patch changed nothing.

    containerd 1.7 reads a config that starts with a byte-order mark, 2.x refuses it
    ("invalid character at start of key"): a schema 3 file loses its BOM, with a note."""
    if original is not None and original.startswith(te.BOM) and report.schema >= 3:
        report.notes.append("removed the byte-order mark at the start of the file: "
                            "containerd 2.x refuses to load a config that starts with one")
        original = original.removeprefix(te.BOM)
        report.changed = True
    if original is not None and not report.changed:
        return original
    return dumps(doc, like=original)


def _check_rendering(doc: TOMLDocument, want: dict[str, Any]) -> None:
    te.check_rendering(doc, want, "add the handlers to this file")


def edit_plain(data: dict[str, Any], runtimes: list[Runtime], config_dir: str, schema: int
               ) -> PatchReport:
    """The patch on plain data (an effective config merged from several files)."""
    report = _edit(data, runtimes, config_dir, schema, None)
    return report


def _edit(doc: Any, runtimes: list[Runtime], config_dir: str, schema: int,
          default_runtime: str | None) -> PatchReport:
    """The edit itself, on a tomlkit document or on plain dicts alike."""
    if schema >= 2 and "version" not in doc:
        te.put(doc, "version", schema)
    report = PatchReport(schema=schema)
    target = runtimes_path(schema)
    for rt in runtimes:
        existing = te.get(doc, (*target, rt.handler))
        for other in find_handler(doc, rt.handler):
            if other == schema:
                continue
            src = (*runtimes_path(other), rt.handler)
            carried = te.plain(te.get(doc, src))
            te.delete(doc, src)
            report.moved.append((rt.handler, table_name(src), table_name((*target, rt.handler))))
            if existing is None:
                table = te.ensure_table(doc, (*target, rt.handler))
                for k, v in carried.items():
                    te.put(table, k, v)
                existing = table
        was_new = existing is None
        table = te.ensure_table(doc, (*target, rt.handler))
        changed = _set_if_different(table, "runtime_type", rt.runtime_type)
        for key, value in rt.handler_settings.items():
            changed |= _set_if_different(table, key, value)
        options = rt.containerd_options(config_dir)
        if options:
            changed |= "options" not in table
            opts = te.ensure_table(doc, (*target, rt.handler, "options"))
            for key, value in options.items():
                current = te.plain(opts[key]) if key in opts else None
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
        containerd_table = te.ensure_table(doc, (*CRI_RUNTIME_PLUGIN[schema], "containerd"))
        _set_if_different(containerd_table, "default_runtime_name", default_runtime)
    return report


def handler_table(doc: TOMLDocument, schema: int, handler: str) -> Table | None:
    """The live (editable) table of ``handler`` in the table ``schema`` reads."""
    return te.get(doc, (*runtimes_path(schema), handler))


def handlers(doc: TOMLDocument, schema: int | None = None) -> dict[str, dict[str, Any]]:
    """Handler name -> its table (plain dict), from the table ``schema`` reads."""
    table = te.get(doc, runtimes_path(schema or schema_of(doc)))
    if table is not None and not te.is_table(table):
        raise te.not_a_table(runtimes_path(schema or schema_of(doc)), table)
    return {k: te.plain(v) for k, v in (table or {}).items()}
