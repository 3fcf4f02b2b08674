"""A user's catalog file (``--catalog FILE``): ``[runtimes.NAME]`` tables read, checked
and merged over the runtimes they inherit from, every mistake a UserError naming its key.
"""

from __future__ import annotations

import copy
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import tomlkit

from sandcheck.catalog.escape import EscapeProfile
from sandcheck.catalog.runtime import Runtime
from sandcheck.catalog.surface import HostSurface
from sandcheck.catalog.syscalls import OUTCOMES
from sandcheck.errors import UserError
from sandcheck.judges.escape import PRECONDITIONS

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

_FIELDS = {
    "handler", "runtime_class", "runtime_type", "description", "options", "handler_settings",
    "binaries", "config_files", "overhead", "scheduling", "own_kernel", "dmesg_marker",
    "syscalls", "syscalls_unfiltered", "default_capabilities", "extra_devices", "base",
    "packages", "escape", "surface", "upstream_deviations", "known_deviations",
}
_ESCAPE_KEYS = {"default", "restricted", "privileged", "privileged_required", "notes"}


def read_user_catalog(path: Path, known: dict[str, Runtime]) -> dict[str, Runtime]:
    """Parse a catalog file: ``[runtimes.NAME]`` tables; ``base = "runc"`` inherits."""
    try:
        doc = tomlkit.parse(Path(path).read_text()).unwrap()
    except FileNotFoundError:
        raise UserError(f"catalog file {path} does not exist: pass an existing file") from None
    except Exception as exc:  # tomlkit raises several parse error types
        raise UserError(f"catalog file {path} is not valid TOML ({exc}): fix the syntax") from None
    tables = doc.get("runtimes")
    if not isinstance(tables, dict) or not tables:
        raise UserError(f"catalog file {path} has no [runtimes.NAME] tables: add at least one")
    out: dict[str, Runtime] = {}
    for name, spec in tables.items():
        where = f"{path}: [runtimes.{name}]"
        if not isinstance(spec, dict):
            raise UserError(f"{where} must be a table")
        unknown = set(spec) - _FIELDS
        if unknown:
            raise UserError(
                f"{where} has unknown keys {sorted(unknown)}: allowed are {sorted(_FIELDS)}"
            )
        base_name = spec.get("base", name if name in known else None)
        if base_name is not None and base_name not in known and base_name not in out:
            raise UserError(f"{where}: base {base_name!r} is not a known runtime")
        if base_name is None and ("runtime_type" not in spec or "handler" not in spec):
            raise UserError(f"{where} is a new runtime: it needs handler and runtime_type")
        base = (out.get(base_name) or known.get(base_name)) if base_name else None
        out[name] = _merge(name, base, spec, where)
    return out


def _syscall_table(base: dict[str, frozenset[str]], extra: dict[str, Any] | None,
                   where: str) -> dict[str, frozenset[str]]:
    table = dict(base)
    for sc, outcomes in (extra or {}).items():
        outcomes = [outcomes] if isinstance(outcomes, str) else list(outcomes)
        bad = [o for o in outcomes if o not in OUTCOMES]
        if bad:
            raise UserError(f"{where}.{sc} has {bad}; outcomes are {', '.join(OUTCOMES)}")
        table[sc] = frozenset(outcomes)
    return table


def _escape_profile(base: EscapeProfile | None, spec: Any, where: str) -> EscapeProfile | None:
    """``[runtimes.NAME.escape]``: lists of precondition names; ``privileged = "any"``
    allows every one; keys not given are inherited."""
    if spec is None:
        return base
    if not isinstance(spec, dict):
        raise UserError(f"{where} must be a table with keys {sorted(_ESCAPE_KEYS)}")
    unknown = set(spec) - _ESCAPE_KEYS
    if unknown:
        raise UserError(f"{where} has unknown keys {sorted(unknown)}: allowed are "
                        f"{sorted(_ESCAPE_KEYS)}")
    values: dict[str, Any] = {}
    for key in ("default", "restricted", "privileged", "privileged_required"):
        if key not in spec:
            continue
        if key == "privileged" and spec[key] == "any":
            values[key] = None
            continue
        names = spec[key]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise UserError(f"{where}.{key} must be a list of precondition names")
        bad = sorted(set(names) - set(PRECONDITIONS))
        if bad:
            raise UserError(f"{where}.{key} names unknown preconditions {bad}; known are "
                            f"{', '.join(PRECONDITIONS)}")
        values[key] = frozenset(names)
    if "notes" in spec:
        values["notes"] = str(spec["notes"])
    return replace(base or EscapeProfile(), **values)


_SURFACE_KEYS = {"executors", "reachable_max", "never", "expected", "notes"}


def _host_surface(base: HostSurface | None, spec: Any, where: str) -> HostSurface | None:
    """``[runtimes.NAME.surface]``: executors, reachable_max, never and expected (lists of
    syscall names), notes; keys not given are inherited."""
    if spec is None:
        return base
    if not isinstance(spec, dict) or set(spec) - _SURFACE_KEYS:
        raise UserError(f"{where} must be a table with keys among {sorted(_SURFACE_KEYS)}")
    values: dict[str, Any] = {}
    for key in ("executors", "never", "expected"):
        if key in spec:
            names = spec[key]
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise UserError(f"{where}.{key} must be a list of names")
            values[key] = tuple(names) if key == "executors" else frozenset(names)
    if "reachable_max" in spec:
        if not isinstance(spec["reachable_max"], int) or spec["reachable_max"] < 0:
            raise UserError(f"{where}.reachable_max must be a count (0 or more)")
        values["reachable_max"] = spec["reachable_max"]
    if "notes" in spec:
        values["notes"] = str(spec["notes"])
    if base is None and "executors" not in values:
        raise UserError(f"{where} needs executors: \"workload\" or the argv0 names of the "
                        "host processes that run the pod's workload")
    return replace(base or HostSurface(executors=()), **values)


def _overlay(base: dict[str, str], sources: dict[str, Any], where: str) -> dict[str, str]:
    """``base`` with ``sources`` (name = source) over it; an empty source removes one."""
    merged = dict(base)
    for name, source in sources.items():
        if not isinstance(source, str):
            raise UserError(f"{where}: the source of {name!r} must be a string")
        if source:
            merged[name] = source
        else:
            merged.pop(name, None)
    return merged


def _upstream_deviations(base: dict[str, dict[str, str]], spec: Any,
                         where: str) -> dict[str, dict[str, str]]:
    """``[runtimes.NAME.upstream_deviations.SUITE]``: spec name = source; added to the
    base's, an empty source removes an inherited one."""
    merged = {suite: dict(specs) for suite, specs in base.items()}
    if spec is None:
        return merged
    if not isinstance(spec, dict) or not all(isinstance(v, dict) for v in spec.values()):
        raise UserError(f"{where} must hold one table per suite, e.g. [{where.split(': ')[-1]}"
                        ".critest] with \"spec name\" = \"source\"")
    for suite, specs in spec.items():
        merged[suite] = _overlay(merged.get(suite, {}), specs, f"{where}.{suite}")
    return merged


def _known_deviations(base: dict[str, str], spec: Any, where: str) -> dict[str, str]:
    """``[runtimes.NAME.known_deviations]``: check id = source, over the base's; an empty
    source removes an inherited one."""
    if spec is None:
        return dict(base)
    if not isinstance(spec, dict):
        raise UserError(f"{where} must be a table of \"check id\" = \"source\", e.g. "
                        "\"isolation.seccomp_runtime_default\" = \"vendor docs, section 4\"")
    return _overlay(base, spec, where)


def _merge(name: str, base: Runtime | None, spec: dict[str, Any], where: str) -> Runtime:
    rt = base or Runtime(name=name, handler=spec["handler"], runtime_class=spec["handler"],
                         runtime_type=spec["runtime_type"])
    iso = rt.isolation
    caps = spec.get("default_capabilities", iso.default_capabilities)
    if isinstance(caps, str):
        try:
            caps = int(caps, 16)
        except ValueError:
            raise UserError(f"{where}: default_capabilities {caps!r} is not a hex mask "
                            "like \"00000000a80425fb\"") from None
    iso = replace(
        iso,
        own_kernel=spec.get("own_kernel", iso.own_kernel),
        dmesg_marker=spec.get("dmesg_marker", iso.dmesg_marker),
        syscalls=_syscall_table(iso.syscalls, spec.get("syscalls"), f"{where}: syscalls"),
        syscalls_unfiltered=_syscall_table(iso.syscalls_unfiltered,
                                           spec.get("syscalls_unfiltered"),
                                           f"{where}: syscalls_unfiltered"),
        default_capabilities=caps,
        extra_devices=frozenset(spec.get("extra_devices", iso.extra_devices)),
        escape=_escape_profile(iso.escape, spec.get("escape"), f"{where}: escape"),
        surface=_host_surface(iso.surface, spec.get("surface"), f"{where}: surface"),
    )
    options = copy.deepcopy(rt.options)
    options.update(spec.get("options") or {})
    deviations = _upstream_deviations(rt.upstream_deviations, spec.get("upstream_deviations"),
                                      f"{where}: upstream_deviations")
    merged = replace(
        rt,
        name=name,
        handler=spec.get("handler", rt.handler),
        runtime_class=spec.get("runtime_class", spec.get("handler", rt.runtime_class)),
        runtime_type=spec.get("runtime_type", rt.runtime_type),
        description=spec.get("description", rt.description),
        options=options,
        handler_settings={**rt.handler_settings, **(spec.get("handler_settings") or {})},
        binaries=tuple(spec.get("binaries", rt.binaries)),
        packages=tuple(spec.get("packages", rt.packages)),
        config_files={**rt.config_files, **(spec.get("config_files") or {})},
        overhead=spec.get("overhead", rt.overhead),
        scheduling=spec.get("scheduling", rt.scheduling),
        isolation=iso,
        unavailable=None if base is None or "binaries" in spec else rt.unavailable,
        upstream_deviations=deviations,
        known_deviations=_known_deviations(rt.known_deviations, spec.get("known_deviations"),
                                           f"{where}: known_deviations"),
    )
    for label, value in (("handler", merged.handler), ("runtime_class", merged.runtime_class)):
        if not DNS1123_LABEL.match(value) or len(value) > 63:
            raise UserError(
                f"{where}: {label} {value!r} is not a DNS-1123 label: use lower-case "
                "letters, digits and '-', at most 63 characters"
            )
    return merged
