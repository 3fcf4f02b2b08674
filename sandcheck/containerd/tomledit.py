"""Edits of a TOML document that keep the file's own way of writing things.

A config may write any table as a ``[header]``, an inline table ``{ ... }`` or dotted keys
(``containerd.runtimes.runc.runtime_type = ...``), and may use CRLF line endings or start
with a byte-order mark. tomlkit keeps all of that when it parses, but adding a table where
the file uses inline or dotted style makes it raise ("Inline tables cannot contain a
table") or render headers at the wrong path. So a new table is written in its parent's
style: a header table under a header table, an inline table anywhere else.

The same functions work on plain dicts, which is how ``config.patch`` proves an edit: it
makes it on the document and on plain data and compares what a strict parser reads back.
"""

from __future__ import annotations

import re
from typing import Any

import tomlkit
from tomlkit.container import Container, OutOfOrderTableProxy
from tomlkit.items import AoT, InlineTable, Item, Table

from sandcheck.errors import UserError

try:
    import tomllib
except ImportError:  # Python 3.10: tomlkit reads its own output back
    tomllib = None

BOM = "\ufeff"


def table_name(path: tuple[str, ...]) -> str:
    """Render a key path the way it appears in a TOML table header."""
    return ".".join(p if re.fullmatch(r"[A-Za-z0-9_-]+", p) else f'"{p}"' for p in path)


# --- line endings and byte-order mark --------------------------------------------------

def normalized(text: str) -> str:
    """The text tomlkit should parse: no BOM, LF line endings (tomlkit keeps CRLF it
    reads but writes LF for what it adds, which would mix both in one file)."""
    return text.removeprefix(BOM).replace("\r\n", "\n")


def in_style_of(text: str, original: str | None) -> str:
    """``text`` (LF, no BOM) written with the line endings and BOM of ``original``."""
    if original is None:
        return text
    if "\r\n" in original:
        text = text.replace("\n", "\r\n")
    return BOM + text if original.startswith(BOM) else text


# --- what a node is --------------------------------------------------------------------

def _is_tomlkit(node: Any) -> bool:
    return isinstance(node, (Item, Container, OutOfOrderTableProxy))


def is_table(node: Any) -> bool:
    return isinstance(node, (dict, Table, InlineTable, Container, OutOfOrderTableProxy))


def kind(node: Any) -> str:
    """A user's word for a value's TOML type, for error messages."""
    if isinstance(node, AoT) or (isinstance(node, list) and node and is_table(node[0])):
        return "an array of tables ([[...]])"
    if isinstance(node, list):
        return "an array"
    if isinstance(node, bool):
        return "a boolean"
    if isinstance(node, (int, float)):
        return "a number"
    if isinstance(node, str):
        return "a string"
    return f"a {type(node).__name__}"


def _bodies(node: Any) -> list[Container]:
    if isinstance(node, Container):
        return [node]
    if isinstance(node, (Table, InlineTable)):
        return [node.value]
    if isinstance(node, OutOfOrderTableProxy):
        return [t.value for t in node._tables]
    return []


def _written_dotted(parent: Any, key: str) -> bool:
    """Whether ``parent[key]`` comes from dotted keys (``key.sub = value``)."""
    return any(k is not None and k.key == key and k.is_dotted()
               for body in _bodies(parent) for k, _ in body.body)


def _inline_scope(parent: Any, key: str | None = None) -> bool:
    """New tables under ``parent`` (or under ``parent[key]``) must be inline tables."""
    if isinstance(parent, InlineTable):
        return True
    return key is not None and _written_dotted(parent, key)


# --- reading and editing ---------------------------------------------------------------

def plain(value: Any) -> Any:
    return value.unwrap() if hasattr(value, "unwrap") else value


def get(root: Any, path: tuple[str, ...]) -> Any:
    """The node at ``path``, or None; a non-table on the way is an error naming it."""
    node = root
    for i, key in enumerate(path):
        if not is_table(node):
            raise not_a_table(path[:i], node)
        node = node.get(key)
        if node is None:
            return None
    return node


def not_a_table(path: tuple[str, ...], node: Any) -> UserError:
    return UserError(
        f"[{table_name(path)}] is {kind(node)}, but containerd reads it as a table: write "
        f"it as [{table_name(path)}] and run again")


def converted(value: Any, inline: bool) -> Any:
    """A value to store: dicts become inline tables where tables must be inline."""
    if isinstance(value, dict) and inline:
        table = tomlkit.inline_table()
        for k, v in value.items():
            table[k] = converted(plain(v), True)
        return table
    return value


def put(parent: Any, key: str, value: Any, *, inline: bool = False) -> None:
    """``parent[key] = value``, in the parent's style."""
    if _is_tomlkit(parent):
        inline = inline or _inline_scope(parent)
    parent[key] = converted(plain(value), inline) if _is_tomlkit(parent) else value


def ensure_table(root: Any, path: tuple[str, ...], super_leaf: bool = False) -> Any:
    """The (editable) table at ``path``, made where missing in the style of its parent.
    Parents made on the way get no header of their own; nor does the last one with
    ``super_leaf`` (a table that will hold only tables)."""
    node, inline = root, False
    for i, key in enumerate(path):
        child = node.get(key)
        if child is not None and not is_table(child):
            raise not_a_table(path[: i + 1], child)
        if child is None:
            if not _is_tomlkit(node):
                node[key] = {}
            elif inline or _inline_scope(node):
                node[key] = tomlkit.inline_table()
            else:
                node[key] = tomlkit.table(is_super_table=super_leaf or i < len(path) - 1)
            child = node[key]
        inline = inline or isinstance(child, InlineTable) or (
            _is_tomlkit(node) and _written_dotted(node, key))
        node = child
    return node


def delete(root: Any, path: tuple[str, ...]) -> None:
    """Delete ``path`` and then every parent table that this left empty."""
    for depth in range(len(path), 0, -1):
        parent = get(root, path[: depth - 1]) if depth > 1 else root
        if parent is None or path[depth - 1] not in parent:
            return
        child = parent[path[depth - 1]]
        if depth < len(path) and is_table(child) and len(child) > 0:
            return
        del parent[path[depth - 1]]


def first_difference(want: Any, got: Any, path: tuple[str, ...] = ()) -> tuple[str, ...] | None:
    """The first key path where two plain values differ, or None when equal."""
    if isinstance(want, dict) and isinstance(got, dict):
        for key in list(want) + [k for k in got if k not in want]:
            if key not in want or key not in got:
                return (*path, key)
            diff = first_difference(want[key], got[key], (*path, key))
            if diff is not None:
                return diff
        return None
    return None if want == got and type(want) is type(got) else path


def check_rendering(doc: Any, want: dict[str, Any], what: str) -> None:
    """A strict parser must read the rendered ``doc`` as ``want``; else refuse, naming the
    table tomlkit would have written somewhere else."""
    text = tomlkit.dumps(doc)
    try:
        got = tomllib.loads(text) if tomllib else tomlkit.parse(text).unwrap()
    except Exception:  # the parser's error says nothing the user can act on
        got = None
    diff = first_difference(want, got) if got is not None else ()
    if diff is None:
        return
    table = diff[:-1] if diff and is_table(get(want, diff[:-1]) or {}) else diff
    raise UserError(
        f"cannot {what} in place: [{table_name(table)}] is written in a layout sandcheck "
        "cannot extend without changing its meaning; write that table as a [table] header, "
        "or use --drop-in DIR, and run again")


def delta(before: Any, after: Any) -> dict[str, Any]:
    """What ``after`` adds or changes over ``before`` (nested dicts; removals not shown)."""
    out: dict[str, Any] = {}
    for key, value in after.items():
        old = before.get(key) if isinstance(before, dict) else None
        if isinstance(value, dict) and isinstance(old, dict):
            sub = delta(old, value)
            if sub:
                out[key] = sub
        elif old != value:
            out[key] = value
    return out


def apply_delta(node: Any, changes: dict[str, Any]) -> None:
    """Write ``changes`` (from ``delta``) into ``node``, tables in their file's style."""
    for key, value in changes.items():
        current = node.get(key)
        if isinstance(value, dict) and (current is None or is_table(current)):
            only_tables = all(isinstance(v, dict) for v in value.values())
            apply_delta(ensure_table(node, (key,), super_leaf=only_tables), value)
        else:
            put(node, key, value)
