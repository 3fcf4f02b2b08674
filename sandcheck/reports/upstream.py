"""Upstream suites per runtime: how many of each suite's specs passed, failed, were declared
deviations or skipped, the suite's wall time, and beside it the wall time of sandcheck's own
checks of the same runtime in the same run (so the cost of the upstream suites is read
against the suite's own)."""

from __future__ import annotations

import html
from collections import Counter
from dataclasses import dataclass, field

from sandcheck.reports.results import Results

SUITES = ("critest", "e2e")
COUNTED = ("passed", "failed", "deviation", "skipped")


@dataclass
class Row:
    suite: str
    runtime: str
    counts: Counter = field(default_factory=Counter)
    seconds: float | None = None
    own_checks: int = 0
    own_seconds: float = 0.0


def _suite_of(check_id: str) -> str | None:
    prefix = check_id.split(".", 1)[0]
    return prefix if prefix in SUITES else None


def upstream_rows(results: Results) -> list[Row]:
    rows: dict[tuple[str, str], Row] = {}
    own: Counter = Counter()
    own_seconds: Counter = Counter()
    for check in results.checks:
        runtime = check.runtime or "·"
        suite = _suite_of(check.id)
        if suite is not None:
            rows.setdefault((suite, runtime), Row(suite, runtime)).counts[check.status] += 1
        elif not check.id.startswith("upstream."):
            own[runtime] += 1
            own_seconds[runtime] += check.duration_seconds
    for metric in results.metrics:
        suite = metric.name.removeprefix("upstream_").removesuffix("_seconds")
        row = rows.get((suite, metric.runtime))
        if row is not None and metric.samples:
            row.seconds = sum(metric.samples)
    for row in rows.values():
        row.own_checks, row.own_seconds = own[row.runtime], own_seconds[row.runtime]
    return [rows[k] for k in sorted(rows)]


def _cells(row: Row) -> list[str]:
    wall = f"{row.seconds:.0f} s" if row.seconds is not None else "·"
    own = f"{row.own_seconds:.0f} s ({row.own_checks} checks)" if row.own_checks else "·"
    return [row.suite, row.runtime, *(str(row.counts[s]) for s in COUNTED), wall, own]


HEADERS = ["suite", "runtime", *COUNTED, "wall time", "sandcheck's own checks, same runtime"]


def upstream_html(results: Results) -> str:
    rows = upstream_rows(results)
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADERS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in _cells(r)) + "</tr>"
                   for r in rows)
    return ("<h2>Upstream suites</h2><p class=sub>each upstream spec is a check of its own "
            "below; deviations are the runtime's declared ones</p>"
            f"<table><tr>{head}</tr>{body}</table>")


def upstream_markdown(results: Results) -> list[str]:
    rows = upstream_rows(results)
    if not rows:
        return []
    return ["## Upstream suites", "", "| " + " | ".join(HEADERS) + " |",
            "|" + " --- |" * len(HEADERS),
            *("| " + " | ".join(_cells(r)) + " |" for r in rows), ""]
