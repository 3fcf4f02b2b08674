"""A run's results shaped for display: runtime columns (runc, the reference, first), the
conformance cells, metrics grouped by name, status totals.

Both the HTML page and the Markdown summary lay their tables out from these, and the
baseline comparison groups metrics the same way.
"""

from __future__ import annotations

from sandcheck.reports.results import Check, Metric, Results
from sandcheck.reports.spread import median_ratio, ratio_text

STATUS_RANK = {"skipped": 0, "passed": 1, "deviation": 2, "failed": 3, "error": 4}
NO_RUNTIME = "any"
"""Column for checks that are not parametrized by runtime."""
REFERENCE = "runc"


def spread_vs_reference(results: Results, metric: Metric) -> str:
    """The median ratio to runc's with its bootstrap interval, or that it is within noise."""
    ref = results.metric(metric.key()[0], REFERENCE)
    if metric.runtime == REFERENCE:
        return "reference"
    if ref is None:
        return "n/a"
    return ratio_text(median_ratio(metric.samples, ref.samples), REFERENCE)


def runtime_columns(results: Results) -> list[str]:
    """runc (the reference) first, then runtimes as first seen; runtime-less checks last."""
    names = results.runtimes()
    if REFERENCE in names:
        names = [REFERENCE] + [n for n in names if n != REFERENCE]
    if any(c.runtime is None for c in results.checks):
        names.append(NO_RUNTIME)
    return names


Cells = dict[tuple[str, str], list[Check]]


def conformance(results: Results) -> tuple[list[str], list[str], Cells]:
    cells: dict[tuple[str, str], list[Check]] = {}
    for check in results.checks:
        cells.setdefault((check.id, check.runtime or NO_RUNTIME), []).append(check)
    ids = sorted({c.id for c in results.checks})
    return ids, runtime_columns(results), cells


def worst(checks: list[Check]) -> str:
    return max((c.status for c in checks), key=lambda s: STATUS_RANK.get(s, 4))


def metric_groups(results: Results) -> dict[str, list[Metric]]:
    order = {name: i for i, name in enumerate(runtime_columns(results))}
    groups: dict[str, list[Metric]] = {}
    for m in results.metrics:
        groups.setdefault(m.name, []).append(m)
    for ms in groups.values():
        ms.sort(key=lambda m: order.get(m.runtime, len(order)))
    return groups


def totals(results: Results) -> dict[str, int]:
    counts = {s: 0 for s in ("passed", "failed", "skipped", "error")}
    if any(c.status == "deviation" for c in results.checks):
        counts["deviation"] = 0
    for c in results.checks:
        counts[c.status] = counts.get(c.status, 0) + 1
    return counts


def runtime_label(m: Metric) -> str:
    extra = ",".join(f"{k}={v}" for k, v in sorted(m.labels.items()))
    return f"{m.runtime} ({extra})" if extra else m.runtime


def problems(results: Results) -> list[Check]:
    return [c for c in results.checks if c.status in ("failed", "error")]
