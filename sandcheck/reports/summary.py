"""summary.md: the run in Markdown, short enough for a GitHub job summary.

The whole environment and every piece of evidence stay in results.json and report.html.
"""

from __future__ import annotations

import math
from typing import Any

from sandcheck.reports.densityview import density_markdown
from sandcheck.reports.matrix import FLEET_CELLS, matrix_markdown, verdicts
from sandcheck.reports.pick import pick_markdown
from sandcheck.reports.results import Results
from sandcheck.reports.soakview import soak_markdown
from sandcheck.reports.surface import surface_markdown
from sandcheck.reports.tables import (
    NO_RUNTIME,
    REFERENCE,
    conformance,
    metric_groups,
    problems,
    runtime_label,
    spread_vs_reference,
    totals,
    worst,
)
from sandcheck.reports.upstream import upstream_markdown
from sandcheck.reports.values import scale, stats, unit_kind, with_unit
from sandcheck.reports.verdict import verdict_markdown

ICONS = {"passed": "✅", "failed": "❌", "skipped": "⏭", "error": "💥", "deviation": "🔶"}


def md_cell(text: Any, limit: int = 160) -> str:
    s = " ".join(str(text).split())
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    return s.replace("|", "\\|")


def render_markdown(results: Results) -> str:
    counts = totals(results)
    lines = ["# sandcheck results", ""]
    counted = ", ".join(f"{ICONS[s]} {n:,} {s}" for s, n in counts.items())
    lines.append(f"**{len(results.checks):,} checks:** {counted} · "
                 f"**{len(results.metrics)} metrics**")
    env = results.environment
    facts = [f"{k} `{md_cell(env[k], 60)}`" for k in ("backend", "backend_level", "host_kernel")
             if k in env]
    lines += ["", *verdict_markdown(results), *pick_markdown(results),
              *matrix_markdown(results),
              *surface_markdown(results), *upstream_markdown(results),
              *md_conformance(results),
              *md_failures(results, len(verdicts(results)) > FLEET_CELLS),
              *density_markdown(results),
              *md_metrics(results), *soak_markdown(results)]
    if facts:
        lines += ["## Environment", "", " · ".join(facts), "",
                  "(the whole environment is in results.json and report.html)"]
    return "\n".join(lines).rstrip() + "\n"


def md_conformance(results: Results) -> list[str]:
    ids, columns, cells = conformance(results)
    if not ids:
        return []
    out = ["## Conformance", "", "| check | " + " | ".join(columns) + " |",
           "|---|" + "---|" * len(columns)]
    for cid in ids:
        row = []
        for rt in columns:
            checks = cells.get((cid, rt))
            row.append(ICONS.get(worst(checks), "?") if checks else "·")
        out.append(f"| `{cid}` | " + " | ".join(row) + " |")
    passed = []
    for rt in columns:
        column = [c for (_, r), cs in cells.items() if r == rt for c in cs]
        passed.append(f"{sum(c.status == 'passed' for c in column)}/{len(column)}")
    out += ["| **passed** | " + " | ".join(passed) + " |", "",
            "✅ passed · ❌ failed · ⏭ skipped · 💥 error · 🔶 declared deviation · `·` not run",
            ""]
    return out


def md_metrics(results: Results) -> list[str]:
    groups = metric_groups(results)
    if not groups:
        return []
    out = ["## Metrics", "", f"| metric | runtime | n | p50 | p95 | median vs {REFERENCE} "
           "(95% CI) | failures |", "|---|---|--:|--:|--:|---|--:|"]
    for name, metrics in groups.items():
        kind = unit_kind(metrics[0])
        for m in metrics:
            s = stats(m)
            label, div = scale(kind, [s.get("p50", math.nan), s.get("p95", math.nan)], m.unit)
            out.append(f"| `{name}` | {md_cell(runtime_label(m))} | {s.get('count', 0)} | "
                       f"{with_unit(s.get('p50', math.nan), label, div)} | "
                       f"{with_unit(s.get('p95', math.nan), label, div)} | "
                       f"{md_cell(spread_vs_reference(results, m))} | {m.failures} |")
    return out + [""]


def md_failures(results: Results, fleet: bool = False) -> list[str]:
    """Each failure, deviation and skip with its message; in a fleet run one line per check
    and class (on how many nodes, the first message), not one per cell."""
    out: list[str] = []
    for title, checks in (("Failures", problems(results)),
                          ("Declared deviations", [c for c in results.checks
                                                   if c.status == "deviation"]),
                          ("Skipped, and why", [c for c in results.checks
                                                if c.status == "skipped"])):
        if not checks:
            continue
        out += [f"## {title}", ""]
        if fleet:
            out += _grouped(checks)
            out.append("")
            continue
        for c in checks:
            message = f": {md_cell(c.message, 200)}" if c.message else ""
            out.append(f"- {ICONS.get(c.status, '?')} `{c.id}` [{c.runtime or NO_RUNTIME}]"
                       f"{message}")
        out.append("")
    return out


def _grouped(checks: list) -> list[str]:
    by: dict[tuple[str, str, str], list] = {}
    for c in checks:
        by.setdefault((c.status, c.id, c.runtime or NO_RUNTIME), []).append(c)
    out = []
    for (status, cid, runtime), cs in sorted(by.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        nodes = len({c.node for c in cs if c.node})
        where = f" on {nodes:,} node{'s' * (nodes != 1)}" if nodes else f" ×{len(cs):,}"
        first = next((c.message for c in cs if c.message), "")
        message = f" (first message: {md_cell(first, 200)})" if first else ""
        out.append(f"- {ICONS.get(status, '?')} `{cid}` [{runtime}]{where}{message}")
    return out
