"""Writes a run's reports: results.json, a self-contained report.html and summary.md.

The HTML page must open from a CI artifact with no network, so CSS is inline and plots are
base64 PNGs. The value formatting helpers here are shared with the baseline comparison so
numbers read the same everywhere.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import random
import shlex
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sandcheck.reports.matrix import matrix_html, matrix_markdown
from sandcheck.reports.results import Check, Metric, Results, summarize
from sandcheck.reports.spread import median_ratio, ratio_text
from sandcheck.reports.surface import surface_html, surface_markdown
from sandcheck.reports.upstream import upstream_html, upstream_markdown
from sandcheck.reports.verdict import check_anchor, verdict_html, verdict_markdown

STATUS_RANK = {"skipped": 0, "passed": 1, "deviation": 2, "failed": 3, "error": 4}
ICONS = {"passed": "✅", "failed": "❌", "skipped": "⏭", "error": "💥", "deviation": "🔶"}
NO_RUNTIME = "any"
"""Column for checks that are not parametrized by runtime."""
REFERENCE = "runc"
MIB = 1024 * 1024
OUTPUT_LIMIT = 4000
STATS = ("count", "min", "p05", "p50", "p95", "p99", "max")
PLOT_MIN_SAMPLES = 3
"""A metric with fewer samples per runtime than this gets a table row, not a plot."""
PLOT_FIRST = ("startup_total_seconds", "startup_cri_sandbox_to_container_seconds",
              "pss_per_pod_bytes", "startup_first_exec_seconds")
"""The plots a reader looks for first: the start and the memory of each runtime."""


def write_reports(results: Results, report_dir: Path) -> list[Path]:
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    json_path = report_dir / "results.json"
    results.write(json_path)
    html_path = report_dir / "report.html"
    html_path.write_text(render_html(results), encoding="utf-8")
    md_path = report_dir / "summary.md"
    md_path.write_text(render_markdown(results), encoding="utf-8")
    return [json_path, html_path, md_path]


# ---- values, units, statistics (shared with reports.baseline) ----

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


def spread_vs_reference(results: Results, metric: Metric) -> str:
    """The median ratio to runc's with its bootstrap interval, or that it is within noise."""
    ref = results.metric(metric.name, REFERENCE)
    if metric.runtime == REFERENCE:
        return "reference"
    if ref is None:
        return "n/a"
    return ratio_text(median_ratio(metric.samples, ref.samples), REFERENCE)


# ---- shaping the results ----

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


# ---- HTML ----

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2330;
 margin:0;background:#f5f6f8}
main{max-width:1200px;margin:0 auto;padding:20px 28px 48px}
h1{font-size:24px;margin:8px 0 4px}h2{font-size:19px;margin:30px 0 10px;
 border-bottom:2px solid #d9dde5;padding-bottom:4px}h3{font-size:15px;margin:18px 0 6px}
.sub{color:#5b6475;margin:0 0 12px}
table{border-collapse:collapse;background:#fff;margin:6px 0 14px;font-size:13px}
th,td{border:1px solid #d9dde5;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#eef0f4;font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.env td:first-child{font-weight:600;white-space:nowrap;color:#3a4252}
table.env table{margin:0;width:100%}
td.st{text-align:center;font-weight:600;white-space:nowrap;cursor:help;min-width:64px}
.s-passed{background:#d9f2df;color:#17602a}.s-failed{background:#fbd9d9;color:#9b1c1c}
.s-skipped{background:#eceef2;color:#5b6475}.s-error{background:#ffe4bf;color:#8a4b00}
.s-deviation{background:#fff1c2;color:#7a5b00}
.none{color:#b0b6c2;text-align:center}
.chip{display:inline-block;padding:2px 10px;border-radius:10px;margin-right:6px;font-weight:600}
tfoot td{font-weight:600;background:#f7f8fa}
.check{background:#fff;border:1px solid #d9dde5;border-left:5px solid #9b1c1c;
 padding:8px 14px;margin:10px 0;border-radius:3px}
details.check{padding:3px 12px;margin:4px 0}
.check.error{border-left-color:#d97706}.check.passed{border-left-color:#3f9a57}
.check.skipped{border-left-color:#9aa3b2}.check.deviation{border-left-color:#c79a00}
.check h3:first-child{margin-top:4px}
.check .msg{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12.5px;
 white-space:pre-wrap;color:#9b1c1c}
pre{background:#1e2430;color:#e6e9ef;padding:8px 10px;border-radius:3px;overflow:auto;
 font-size:12px;line-height:1.35;max-height:420px;white-space:pre-wrap;word-break:break-word}
dl{margin:4px 0;font-size:12.5px}dt{font-weight:600;display:inline}
dd{display:inline;margin:0 12px 0 4px}
table.env table td{border-color:#e6e9ef}
details>summary{cursor:pointer;padding:2px 0}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(540px,1fr));gap:14px}
.plots figure{margin:0;background:#fff;border:1px solid #d9dde5;padding:6px}
.plots img{width:100%;height:auto;display:block}
.muted{color:#7a8293}
#verdict .verdict{background:#fff;border:1px solid #d9dde5;border-left:6px solid #3f9a57;
 padding:7px 12px;margin:6px 0;font-size:15px}
#verdict .v-failed{border-left-color:#9b1c1c}#verdict .v-skipped{border-left-color:#9aa3b2}
#verdict .verdict b{display:inline-block;min-width:70px}
#verdict .what{margin-right:14px}#verdict .cost{color:#3a4252;margin-right:14px}
#verdict .cost:before{content:"· ";color:#9aa3b2}
b.ok{color:#17602a}b.bad{color:#9b1c1c}
details.env-all>summary h2{display:inline-block;border:0;margin:24px 0 6px}
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def render_html(results: Results) -> str:
    counts = totals(results)
    chips = "".join(f'<span class="chip s-{s}">{n} {s}</span>' for s, n in counts.items())
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        "<title>sandcheck report</title>", f"<style>{CSS}</style></head><body><main>",
        "<h1>sandcheck report</h1>",
        f'<p class="sub">generated {stamp} · {len(results.checks)} checks · '
        f"{len(results.metrics)} metrics</p><p>{chips}</p>",
        verdict_html(results), matrix_html(results), surface_html(results),
        upstream_html(results),
        conformance_html(results), failures_html(results), plots_html(results),
        metrics_html(results), other_evidence_html(results),
        "<details class=env-all><summary><h2>Environment</h2></summary>",
        env_table(results.environment), "</details>", "</main></body></html>",
    ]
    return "\n".join(p for p in parts if p)


def env_table(env: Any) -> str:
    if not isinstance(env, dict) or not env:
        return '<p class="muted">no environment recorded</p>'
    rows = "".join(f"<tr><td>{esc(k)}</td><td>{env_value(v)}</td></tr>" for k, v in env.items())
    return f'<table class="env">{rows}</table>'


def env_value(value: Any) -> str:
    if isinstance(value, dict):
        return env_table(value) if value else '<span class="muted">(empty)</span>'
    if isinstance(value, (list, tuple)):
        if all(not isinstance(v, (dict, list, tuple)) for v in value):
            return esc(", ".join(str(v) for v in value))
        return f"<pre>{esc(pretty(value))}</pre>"
    return esc(value)


def conformance_html(results: Results) -> str:
    ids, columns, cells = conformance(results)
    if not ids:
        return '<h2>Conformance</h2><p class="muted">no checks were run</p>'
    head = "".join(f"<th>{esc(rt)}</th>" for rt in columns)
    rows = []
    for cid in ids:
        tds = []
        for rt in columns:
            checks = cells.get((cid, rt))
            if not checks:
                tds.append('<td class="none">·</td>')
                continue
            status = worst(checks)
            tip = "\n".join(f"{c.status}: {c.message}" if c.message else c.status for c in checks)
            more = f" ×{len(checks)}" if len(checks) > 1 else ""
            label = f"{esc(status)}{more}"
            if status in ("failed", "error"):
                bad = next(c for c in checks if c.status == status)
                label = f'<a href="#{check_anchor(bad)}">{label}</a>'
            tds.append(f'<td class="st s-{esc(status)}" title="{esc(tip)}">{label}</td>')
        rows.append(f"<tr><td><code>{esc(cid)}</code></td>{''.join(tds)}</tr>")
    foot = []
    for rt in columns:
        column = [c for (cid, r), cs in cells.items() if r == rt for c in cs]
        passed = sum(c.status == "passed" for c in column)
        foot.append(f'<td class="num">{passed}/{len(column)}</td>')
    return (f"<h2>Conformance</h2><table><thead><tr><th>check</th>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody><tfoot><tr><td>passed</td>{''.join(foot)}</tr>"
            "</tfoot></table>")


def pretty(output: Any) -> str:
    if isinstance(output, str):
        return output
    try:
        return json.dumps(output, indent=2, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(output)


def truncate(text: str, limit: int = OUTPUT_LIMIT) -> str:
    """Keeps head and tail: the error is usually at the end of a log."""
    if len(text) <= limit:
        return text
    head, tail = limit * 5 // 8, limit * 3 // 8
    return f"{text[:head]}\n… [{len(text) - head - tail} characters cut] …\n{text[-tail:]}"


def evidence_html(items: list[dict[str, Any]]) -> str:
    out = []
    for item in items or []:
        if not isinstance(item, dict):
            item = {"what": "evidence", "output": item}
        extra = []
        for key, value in item.items():
            if key in ("what", "output"):
                continue
            if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
                value = shlex.join(value)
            elif isinstance(value, (dict, list)):
                value = pretty(value)
            extra.append(f"<dt>{esc(key)}</dt><dd>{esc(truncate(str(value), 400))}</dd>")
        out.append(f"<h3>{esc(item.get('what', 'evidence'))}</h3>")
        if extra:
            out.append(f"<dl>{''.join(extra)}</dl>")
        if item.get("output") not in (None, ""):
            out.append(f"<pre>{esc(truncate(pretty(item['output'])))}</pre>")
    return "".join(out) or '<p class="muted">no evidence recorded</p>'


def check_html(check: Check, open_: bool) -> str:
    title = f"{check.id} [{check.runtime or NO_RUNTIME}] — {check.status}"
    body = (f'<div class="msg">{esc(check.message)}</div>' if check.message else "")
    meta = f'<p class="muted">{esc(check.nodeid)} · {num(check.duration_seconds)}s</p>'
    inner = f"{body}{meta}{evidence_html(check.evidence)}"
    if open_:  # a failure: its message in the summary line, its evidence one click away
        first = check.message.strip().split("\n", 1)[0][:160]
        return (f'<details class="check {esc(check.status)}" id="{check_anchor(check)}">'
                f"<summary><b>{esc(title)}</b>{': ' + esc(first) if first else ''}"
                f"</summary>{inner}</details>")
    return (f'<details class="check {esc(check.status)}" id="{check_anchor(check)}">'
            f"<summary>{esc(title)}</summary>{inner}</details>")


def failures_html(results: Results) -> str:
    bad = problems(results)
    if not bad:
        return ""
    return ('<h2>Failures and errors</h2><p class="muted">Each with its evidence: click to '
            'expand.</p>' + "".join(check_html(c, open_=True) for c in bad))


def other_evidence_html(results: Results) -> str:
    """Collapsed, at the end: a certification report keeps the evidence of every check."""
    rest = [c for c in results.checks if c.status not in ("failed", "error") and c.evidence]
    if not rest:
        return ""
    return ("<h2>Evidence of the other checks</h2>" +
            "".join(check_html(c, open_=False) for c in rest))


def metrics_html(results: Results) -> str:
    groups = metric_groups(results)
    if not groups:
        return ""
    parts = ["<h2>Metrics</h2>"]
    for name, metrics in groups.items():
        kind = unit_kind(metrics[0])
        summaries = [stats(m) for m in metrics]
        label, div = scale(kind, [s.get("p50", math.nan) for s in summaries], metrics[0].unit)
        has_ref = any(m.runtime == REFERENCE for m in metrics)
        head = "".join(f'<th class="num">{s}</th>' for s in (*STATS, "failures"))
        if has_ref:
            head += f"<th>median vs {REFERENCE} (95% CI)</th>"
        rows = []
        for m, s in zip(metrics, summaries, strict=True):
            cells = [f'<td class="num">{s.get("count", 0)}</td>']
            cells += [f'<td class="num">{num(s.get(k, math.nan) / div)}</td>' for k in STATS[1:]]
            cells.append(f'<td class="num">{m.failures}</td>')
            if has_ref:
                cells.append(f"<td>{esc(spread_vs_reference(results, m))}</td>")
            rows.append(f"<tr><td>{esc(runtime_label(m))}</td>{''.join(cells)}</tr>")
        unit = f" ({esc(label)})" if label else ""
        parts.append(f"<h3><code>{esc(name)}</code>{unit}</h3><table><thead><tr>"
                     f"<th>runtime</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")
    return "".join(parts)


def plots_html(results: Results) -> str:
    figures = []
    colors = palette(runtime_columns(results))
    groups = metric_groups(results)
    for name in sorted(groups, key=lambda n: (PLOT_FIRST.index(n) if n in PLOT_FIRST
                                              else len(PLOT_FIRST))):
        metrics = groups[name]
        kind = unit_kind(metrics[0])
        if max(len(m.samples) for m in metrics) < PLOT_MIN_SAMPLES:
            continue  # one number per runtime: the table says it
        if kind == "seconds" and name.endswith("_seconds"):
            png = seconds_plot(name, metrics, colors)
        elif kind == "bytes" and name.endswith("_bytes"):
            png = bytes_plot(name, metrics, colors)
        else:
            continue
        if png:
            src = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
            figures.append(f'<figure><img src="{src}" alt="{esc(name)}"></figure>')
    if not figures:
        return ""
    return f'<h2>Plots</h2><div class="plots">{"".join(figures)}</div>'


# ---- plots (matplotlib imported lazily: the baseline gate needs none of it) ----

def palette(runtimes: list[str]) -> dict[str, str]:
    base = ["#4c72b0", "#55a868", "#c44e52", "#8172b2", "#ccb974", "#64b5cd", "#dd8452",
            "#937860", "#da8bc3", "#8c8c8c"]
    return {rt: base[i % len(base)] for i, rt in enumerate(runtimes)}


def _figure(rows: int):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.4, 1.25 + 0.5 * rows), dpi=120, layout="constrained")
    return fig, fig.add_subplot()


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def seconds_plot(name: str, metrics: list[Metric], colors: dict[str, str]) -> bytes | None:
    """Horizontal box plot with every sample drawn on top: few samples, all of them matter."""
    data = [(m, [s for s in m.samples if finite(s)]) for m in metrics]
    data = [(m, s) for m, s in data if s]
    if not data:
        return None
    label, div = scale("seconds", [max(s) for _, s in data])
    fig, ax = _figure(len(data))
    positions = list(range(len(data), 0, -1))
    box = ax.boxplot([[v / div for v in s] for _, s in data], positions=positions,
                     orientation="horizontal", widths=0.55, whis=(0, 100), showfliers=False,
                     patch_artist=True, medianprops={"color": "#1d2330"})
    jitter = random.Random(0)
    for (m, s), pos, patch in zip(data, positions, box["boxes"], strict=True):
        color = colors.get(m.runtime, "#4c72b0")
        patch.set_facecolor(color + "55")
        patch.set_edgecolor(color)
        ys = [pos + jitter.uniform(-0.15, 0.15) for _ in s]
        ax.scatter([v / div for v in s], ys, s=14, color=color, alpha=0.85, zorder=3,
                   edgecolors="white", linewidths=0.4)
    ax.set_yticks(positions, [runtime_label(m) for m, _ in data])
    ax.set_xlabel(f"{label} (box: quartiles, whiskers: min–max, dots: samples)")
    ax.set_xlim(left=0)
    ax.set_title(name, fontsize=11, loc="left")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def bytes_plot(name: str, metrics: list[Metric], colors: dict[str, str]) -> bytes | None:
    """Median in MiB per runtime; whiskers span p05..p95 when there are several samples."""
    rows = [(m, stats(m)) for m in metrics]
    rows = [(m, s) for m, s in rows if s.get("count")]
    if not rows:
        return None
    fig, ax = _figure(len(rows))
    positions = list(range(len(rows), 0, -1))
    p50 = [s["p50"] / MIB for _, s in rows]
    low = [max(0.0, (s["p50"] - s["p05"]) / MIB) for _, s in rows]
    high = [max(0.0, (s["p95"] - s["p50"]) / MIB) for _, s in rows]
    ax.barh(positions, p50, height=0.55, xerr=[low, high], capsize=3,
            color=[colors.get(m.runtime, "#4c72b0") for m, _ in rows], ecolor="#1d2330")
    for pos, value, hi in zip(positions, p50, high, strict=True):
        ax.annotate(f"{num(value)} MiB", (value + hi, pos), xytext=(5, 0),
                    textcoords="offset points", va="center", fontsize=9)
    ax.set_yticks(positions, [runtime_label(m) for m, _ in rows])
    ax.set_xlabel("MiB (bar: median, whiskers: p05–p95)")
    ax.set_xlim(0, max(v + h for v, h in zip(p50, high, strict=True)) * 1.22 or 1)
    ax.set_title(name, fontsize=11, loc="left")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


# ---- Markdown (GitHub job summary) ----

def md_cell(text: Any, limit: int = 160) -> str:
    s = " ".join(str(text).split())
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    return s.replace("|", "\\|")


def render_markdown(results: Results) -> str:
    counts = totals(results)
    lines = ["# sandcheck results", ""]
    counted = ", ".join(f"{ICONS[s]} {n} {s}" for s, n in counts.items())
    lines.append(f"**{len(results.checks)} checks:** {counted} · "
                 f"**{len(results.metrics)} metrics**")
    env = results.environment
    facts = [f"{k} `{md_cell(env[k], 60)}`" for k in ("backend", "backend_level", "host_kernel")
             if k in env]
    lines += ["", *verdict_markdown(results), *matrix_markdown(results),
              *surface_markdown(results), *upstream_markdown(results),
              *md_conformance(results), *md_failures(results),
              *md_metrics(results)]
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


def md_failures(results: Results) -> list[str]:
    out: list[str] = []
    for title, checks in (("Failures", problems(results)),
                          ("Declared deviations", [c for c in results.checks
                                                   if c.status == "deviation"]),
                          ("Skipped, and why", [c for c in results.checks
                                                if c.status == "skipped"])):
        if not checks:
            continue
        out += [f"## {title}", ""]
        for c in checks:
            message = f": {md_cell(c.message, 200)}" if c.message else ""
            out.append(f"- {ICONS.get(c.status, '?')} `{c.id}` [{c.runtime or NO_RUNTIME}]"
                       f"{message}")
        out.append("")
    return out
