"""Compares a run's metrics with a stored baseline run and says whether any regressed.

Values are compared as ratios (new / old - 1), never as absolute differences, and beside
that as each runtime's ratio to runc measured in the same run. A metric can gate on the
latter (``mode = "ratio-to-runc"``), so a baseline recorded on a fast machine still gates
a run on a slower CI machine. Every metric is lower-is-better (times, bytes).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.exceptions import TOMLKitError

from sandcheck.errors import UserError
from sandcheck.reports.results import SCHEMA_VERSION, Metric, Results
from sandcheck.reports.tables import REFERENCE, metric_groups
from sandcheck.reports.values import finite, num, ratio, scale, stats, unit_kind, with_unit

BUILTIN_TOLERANCES = """\
# Built-in tolerances; a --tolerances file overrides any of these keys.
[defaults]
seconds = 0.50           # allowed relative increase of *_seconds metrics
bytes = 0.25             # allowed relative increase of *_bytes metrics
other = 0.50             # allowed relative increase of metrics with any other unit
statistic = "p50"        # min, p05, p50, p95, p99, max or mean
mode = "absolute"        # or "ratio-to-runc": gate on the change of value / runc's value
failures = 0             # allowed increase of a metric's failed-sample count
fail_on_missing = false  # a baseline metric absent from the new run fails the gate

# Per metric (exact name or a glob such as "startup_*_seconds"):
# [metrics."startup_total_seconds"]
# tolerance = 0.30
# statistic = "p95"
# mode = "ratio-to-runc"
"""

STATISTICS = ("min", "p05", "p50", "p95", "p99", "max", "mean")
ABSOLUTE, RATIO = "absolute", "ratio-to-runc"
MODES = (ABSOLUTE, RATIO)
KIND_KEYS = ("seconds", "bytes", "other")
RULE_KEYS = ("statistic", "mode", "failures", "fail_on_missing")
DEFAULT_KEYS = (*KIND_KEYS, *RULE_KEYS)
METRIC_KEYS = ("tolerance", *RULE_KEYS)


class ToleranceError(UserError, ValueError):
    """A tolerances file the gate cannot use; the message names the file and the key."""


@dataclass(frozen=True)
class Rule:
    tolerance: float
    statistic: str = "p50"
    mode: str = ABSOLUTE
    failures: int = 0
    fail_on_missing: bool = False


@dataclass
class Tolerances:
    defaults: dict[str, Any]
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str = "built-in"

    def rule(self, name: str, unit: str = "") -> Rule:
        """Defaults for the metric's unit, then the exact-name table, else the first glob."""
        spec = {k: self.defaults[k] for k in RULE_KEYS}
        spec["tolerance"] = self.defaults[unit_kind(name, unit) or "other"]
        override = self.metrics.get(name)
        if override is None:
            override = next((v for pat, v in self.metrics.items() if fnmatchcase(name, pat)), {})
        return Rule(**{**spec, **override})


def _check_value(key: str, value: Any, where: str) -> None:
    if key in ("tolerance", *KIND_KEYS):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
        want = "a number >= 0 (0.5 means +50%)"
    elif key == "statistic":
        ok, want = value in STATISTICS, "one of " + ", ".join(STATISTICS)
    elif key == "mode":
        ok, want = value in MODES, "one of " + ", ".join(MODES)
    elif key == "failures":
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        want = "an integer >= 0"
    else:
        ok, want = isinstance(value, bool), "true or false"
    if not ok:
        raise ToleranceError(f"{where}: {key} = {value!r} must be {want}")


def _section(table: Any, allowed: tuple[str, ...], where: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ToleranceError(f"{where} must be a table")
    for key, value in table.items():
        if key not in allowed:
            raise ToleranceError(f"{where}: unknown key {key!r} (known: {', '.join(allowed)})")
        _check_value(key, value, where)
    return dict(table)


def parse_tolerances(text: str, source: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    try:
        data = tomlkit.parse(text).unwrap()
    except TOMLKitError as exc:
        raise ToleranceError(f"tolerances {source}: not valid TOML ({exc})") from None
    for key in data:
        if key not in ("defaults", "metrics"):
            raise ToleranceError(f"tolerances {source}: unknown key {key!r} "
                                 "(known: defaults, metrics)")
    defaults = _section(data.get("defaults", {}), DEFAULT_KEYS, f"tolerances {source} [defaults]")
    metrics = data.get("metrics", {})
    if not isinstance(metrics, dict):
        raise ToleranceError(f"tolerances {source}: metrics must be a table")
    per_metric = {name: _section(table, METRIC_KEYS, f'tolerances {source} [metrics."{name}"]')
                  for name, table in metrics.items()}
    return defaults, per_metric


def load_tolerances(path: Path | None = None) -> Tolerances:
    defaults, metrics = parse_tolerances(BUILTIN_TOLERANCES, "built-in")
    if path is None:
        return Tolerances(defaults, metrics)
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ToleranceError(f"tolerances {path}: cannot read ({exc})") from None
    user_defaults, user_metrics = parse_tolerances(text, str(path))
    return Tolerances({**defaults, **user_defaults}, {**metrics, **user_metrics}, str(path))


def load_results(path: Path, what: str = "baseline") -> Results:
    """A results.json, or a UserError saying in one line what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path}: no such file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{what} {path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{what} {path}: not a sandcheck results.json (top level is a "
                        f"{type(data).__name__})")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise UserError(f"{what} {path}: schema_version {version!r}, this sandcheck reads "
                        f"{SCHEMA_VERSION}; record a new baseline with this version")
    try:
        results = Results.from_dict(data)
        for m in results.metrics:
            if not (isinstance(m.name, str) and isinstance(m.runtime, str)
                    and isinstance(m.samples, list) and isinstance(m.failures, int)):
                raise TypeError(f"metric {m.name!r} has a wrong field type")
    except (TypeError, KeyError, ValueError, AttributeError) as exc:
        raise UserError(f"{what} {path}: malformed results ({exc})") from None
    return results


@dataclass
class Comparison:
    metric: str
    runtime: str
    rule: Rule
    unit: str = ""
    status: str = "ok"
    """ok, improved, regressed, missing, new or n/a."""
    failed: bool = False
    old: float = math.nan
    new: float = math.nan
    change: float = math.nan
    old_ratio: float = math.nan
    new_ratio: float = math.nan
    ratio_change: float = math.nan
    old_failures: int = 0
    new_failures: int = 0
    note: str = ""

    @property
    def name(self) -> str:
        return f"{self.metric}[{self.runtime}]"


def _stat(metric: Metric | None, statistic: str) -> float:
    return stats(metric).get(statistic, math.nan) if metric is not None else math.nan


def _change(new: float, old: float) -> float:
    r = ratio(new, old)
    return r - 1 if finite(r) else math.nan


def compare_metric(name: str, runtime: str, old: Results, new: Results,
                   tolerances: Tolerances) -> Comparison:
    old_m, new_m = old.metric(name, runtime), new.metric(name, runtime)
    some = old_m or new_m
    rule = tolerances.rule(name, some.unit)
    c = Comparison(name, runtime, rule, some.unit)
    st = rule.statistic
    c.old, c.new = _stat(old_m, st), _stat(new_m, st)
    if old_m is None:
        c.status, c.note = "new", "not in the baseline"
        return c
    if new_m is None or not finite(c.new):
        c.status = "missing"
        c.note = "not in the new run" if new_m is None else f"no {st} in the new run"
        c.failed = rule.fail_on_missing
        return c
    c.old_failures, c.new_failures = old_m.failures, new_m.failures
    c.change = _change(c.new, c.old)
    c.old_ratio = ratio(c.old, _stat(old.metric(name, REFERENCE), st))
    c.new_ratio = ratio(c.new, _stat(new.metric(name, REFERENCE), st))
    c.ratio_change = _change(c.new_ratio, c.old_ratio)
    gated = c.ratio_change if rule.mode == RATIO else c.change
    if not finite(gated):
        if rule.mode == RATIO:
            c.status, c.failed = "missing", rule.fail_on_missing
            c.note = f"no {REFERENCE} {st} in both runs to gate on the ratio"
        else:
            c.status, c.note = "n/a", f"baseline {st} is not a positive number"
    elif gated > rule.tolerance:
        c.status, c.failed = "regressed", True
    elif (1 + gated) * (1 + rule.tolerance) < 1:
        c.status = "improved"
    if c.new_failures - c.old_failures > rule.failures:
        c.status, c.failed = "regressed", True
    return c


def compare(old: Results, new: Results, tolerances: Tolerances) -> list[Comparison]:
    keys = [m.key() for ms in metric_groups(old).values() for m in ms]
    keys += [m.key() for ms in metric_groups(new).values() for m in ms if m.key() not in keys]
    seen: set[tuple[str, str]] = set()
    out = []
    for key in keys:
        if key not in seen:
            seen.add(key)
            out.append(compare_metric(*key, old, new, tolerances))
    return out


def _pct(x: float) -> str:
    return f"{x * 100:+.1f}%" if finite(x) else "n/a"


def format_line(c: Comparison) -> str:
    label = c.status.upper() if c.failed else c.status
    unit, div = scale(unit_kind(c.metric, c.unit), [c.old, c.new], c.unit)
    values = f"{with_unit(c.old, unit, div)} -> {with_unit(c.new, unit, div)}"
    if c.status in ("new", "missing") and not finite(c.change):
        shown = with_unit(c.new, unit, div) if c.status == "new" else with_unit(c.old, unit, div)
        return f"{label:<9} {c.name} {c.rule.statistic} {shown} ({c.note})"
    absolute = f"{values} ({_pct(c.change)}"
    ratios = (f"x {REFERENCE} {num(c.old_ratio)} -> {num(c.new_ratio)} ({_pct(c.ratio_change)}"
              if finite(c.ratio_change) else "")
    tolerance = f", tolerance +{c.rule.tolerance * 100:g}%)"
    if c.rule.mode == RATIO:
        gated, other = (ratios + tolerance if ratios else ""), absolute + ")"
    else:
        gated, other = absolute + tolerance, (ratios + ")" if ratios else "")
    parts = [f"{label:<9} {c.name} {c.rule.statistic} {gated or other}"]
    if gated and other:
        parts.append(other)
    if c.new_failures != c.old_failures:
        parts.append(f"failures {c.old_failures} -> {c.new_failures} "
                     f"(tolerance +{c.rule.failures})")
    if c.note:
        parts.append(c.note)
    return " | ".join(parts)


def report_lines(comparisons: list[Comparison], old_label: str, new_label: str,
                 tolerances: Tolerances) -> list[str]:
    lines = [f"baseline {old_label} vs {new_label} (tolerances: {tolerances.source})"]
    lines += [format_line(c) for c in comparisons] or ["(no metrics in either run)"]
    counts: dict[str, int] = {}
    for c in comparisons:
        counts[c.status] = counts.get(c.status, 0) + 1
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items()) or "nothing compared")
    failed = [c.name for c in comparisons if c.failed]
    if failed:
        lines.append("FAILED: " + ", ".join(failed))
    return lines


def gate(baseline_path: Path, results: Results,
         tolerances_path: Path | None = None) -> tuple[list[str], bool]:
    """Lines to print and whether the run must fail (called at the end of a pytest run)."""
    tolerances = load_tolerances(tolerances_path)
    baseline = load_results(Path(baseline_path), "baseline")
    comparisons = compare(baseline, results, tolerances)
    lines = report_lines(comparisons, str(baseline_path), "this run", tolerances)
    return lines, any(c.failed for c in comparisons)


def compare_files(old: Path, new: Path, tolerances: Path | None = None) -> int:
    """0 when nothing regressed, 1 when something did; bad input raises UserError."""
    loaded = load_tolerances(tolerances)
    old_results = load_results(Path(old), "baseline")
    new_results = load_results(Path(new), "results")
    comparisons = compare(old_results, new_results, loaded)
    for line in report_lines(comparisons, str(old), str(new), loaded):
        print(line)
    return 1 if any(c.failed for c in comparisons) else 0
