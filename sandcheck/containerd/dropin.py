"""``containerd-config --drop-in DIR``: the handlers as a file of their own, the main
config untouched (unless it must learn to import DIR).

The handlers are patched into the EFFECTIVE config (main file plus every import, merged as
containerd merges them), so user settings anywhere are seen and kept; the drop-in then
holds what containerd needs to reach that result from the other files: the changed handler
keys on 2.x, the whole CRI section on 1.x (whose imports replace a plugin's section).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import tomlkit

from sandcheck.catalog import Runtime
from sandcheck.containerd import config as cc
from sandcheck.containerd import imports as ci
from sandcheck.containerd import tomledit as te
from sandcheck.errors import UserError


@dataclass
class DropInPlan:
    path: Path
    text: str
    original: str | None
    report: cc.PatchReport
    imported: bool
    import_pattern: str
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.text != self.original


def plan(main: Path, main_text: str, runtimes: list[Runtime], directory: Path,
         config_dir: str, schema: int | None = None) -> DropInPlan:
    main_doc = cc.parse(main_text, str(main))
    file_schema = cc.schema_of(main_doc, str(main))
    if schema is not None and "version" in main_doc and schema != file_schema:
        raise UserError(f"{main} declares version = {file_schema} but --schema {schema} was "
                        "asked: a drop-in must have its main file's version; drop --schema")
    schema = schema or file_schema
    target = (Path(directory) / ci.DROP_IN_NAME).resolve()
    if target == Path(main).resolve():
        raise UserError(f"--drop-in {directory} would overwrite the main file {main}")
    original = target.read_bytes().decode("utf-8") if target.is_file() else None
    files = ci.resolve(main, main_text)
    imported = any(f.path == target for f in files)
    before = ci.effective(files, schema)
    after = copy.deepcopy(before)
    report = cc.edit_plain(after, runtimes, config_dir, schema)
    doc = cc.parse(original, str(target)) if original is not None else _new(schema)
    if cc.schema_of(doc, str(target)) != schema:
        raise UserError(f"{target} declares version = {cc.schema_of(doc)} but its main file "
                        f"{main} has version = {schema}: make them match")
    want = doc.unwrap()
    if schema <= 2:
        plugin = cc.CRI_RUNTIME_PLUGIN[schema]
        section = te.get(after, plugin)
        changes = {plugin[0]: {plugin[1]: section}} if section != te.get(want, plugin) else {}
    else:
        changes = te.delta(before, after)
        changes = _only(changes, cc.runtimes_path(schema))
    for node in (want, doc):
        if schema <= 2 and changes:
            te.ensure_table(node, plugin[:1], super_leaf=True)
            te.put(te.get(node, plugin[:1]), plugin[1], section)
        else:
            te.apply_delta(node, changes)
    te.check_rendering(doc, want, f"write the handlers into {target}")
    text = cc.dumps(doc, like=original) if changes or original is None else original
    pattern = str(target.parent / "*.toml")
    result = DropInPlan(target, text, original, report, imported, pattern)
    for handler, paths in ci.handler_sources(files, schema).items():
        result.notes.append(f"handler {handler!r} is defined in {', '.join(map(str, paths))}")
    for handler, src, _ in report.moved:
        result.notes.append(f"handler {handler!r} is also in [{src}], which this containerd "
                            "ignores and a drop-in cannot remove: delete it from that file")
    if schema <= 2:
        result.notes.append(
            f"containerd 1.x replaces a plugin's whole section with an imported one, so "
            f"{target.name} carries the complete [{te.table_name(plugin)}] section of the "
            "effective config: later edits of that section belong in the drop-in")
    return result


def _new(schema: int) -> tomlkit.TOMLDocument:
    doc = tomlkit.document()
    doc.add(tomlkit.comment("runtime handlers written by `sandcheck containerd-config "
                            "--drop-in`"))
    if schema >= 2:
        doc["version"] = schema
    return doc


def _only(changes: dict, path: tuple[str, ...]) -> dict:
    """The part of ``changes`` under ``path`` (the handlers' table), nested as in a file."""
    node = te.get(changes, path)
    out: dict = node if node else {}
    for key in reversed(path):
        out = {key: out} if out else {}
    return out


def add_import(main_doc: tomlkit.TOMLDocument, pattern: str) -> None:
    """Append ``pattern`` to the main file's imports (made when missing), in place."""
    want = main_doc.unwrap()
    want["imports"] = [*want.get("imports", []), pattern]
    current = main_doc.get("imports")
    if current is None:
        main_doc["imports"] = [pattern]
    else:
        current.append(pattern)
    te.check_rendering(main_doc, want, "add the import to the main file")
