"""Numbers as every report shows them: finite samples, one display unit per group of
values, about three significant digits.

Shared by the HTML page, the Markdown summary and the baseline comparison, so a value
reads the same in all of them.
"""

from __future__ import annotations

import math
from typing import Any

from sandcheck.reports.results import Metric, summarize

MIB = 1024 * 1024


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def stats(metric: Metric) -> dict[str, float]:
    """Summary over finite samples only: one NaN from a broken probe must not poison p50."""
    return summarize([s for s in metric.samples if finite(s)])


def unit_kind(metric: Metric | str, unit: str = "") -> str:
    """'seconds', 'bytes' or '' — from the name suffix first (the naming convention)."""
    if isinstance(metric, Metric):
        metric, unit = metric.name, metric.unit
    if metric.endswith("_seconds") or unit in ("s", "seconds"):
        return "seconds"
    if metric.endswith("_bytes") or unit in ("B", "bytes"):
        return "bytes"
    return ""


def scale(kind: str, values: list[float], unit: str = "") -> tuple[str, float]:
    """One display unit for a group of values so they compare at a glance."""
    ref = max((abs(v) for v in values if finite(v)), default=0.0)
    if kind == "seconds":
        if ref >= 0.1 or ref == 0:
            return "s", 1.0
        return ("ms", 1e-3) if ref >= 1e-3 else ("µs", 1e-6)
    if kind == "bytes":
        return "MiB", float(MIB)
    return unit, 1.0


def num(x: float) -> str:
    """About three significant digits, trailing zeros kept (0.300, 41.2, 412)."""
    if not finite(x):
        return "n/a"
    if x == 0:
        return "0"
    decimals = max(0, 2 - math.floor(math.log10(abs(x))))
    return f"{x:.{min(decimals, 6)}f}"


def with_unit(x: float, label: str, divisor: float = 1.0) -> str:
    if not finite(x):
        return "n/a"
    sep = "" if label in ("s", "ms", "µs", "") else " "
    return f"{num(x / divisor)}{sep}{label}"


def fmt_value(x: float, kind: str, unit: str = "") -> str:
    label, divisor = scale(kind, [x], unit)
    return with_unit(x, label, divisor)


def ratio(value: float, reference: float) -> float:
    return value / reference if finite(value) and finite(reference) and reference > 0 else math.nan
