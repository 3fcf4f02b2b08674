"""report.html: the whole run on one self-contained page.

The page must open from a CI artifact with no network, so CSS is inline and plots are
base64 PNGs.
"""

from __future__ import annotations

import base64
import html
import json
import math
import shlex
from datetime import datetime, timezone
from typing import Any

from sandcheck.reports.densityview import density_html
from sandcheck.reports.fleetview import CSS as FLEET_CSS
from sandcheck.reports.fleetview import EVIDENCE_PER_CHECK, groups, short
from sandcheck.reports.matrix import FLEET_CELLS, matrix_html, verdicts
from sandcheck.reports.pick import pick_html
from sandcheck.reports.plots import (
    PLOT_FIRST,
    PLOT_MIN_SAMPLES,
    bytes_plot,
    palette,
    seconds_plot,
)
from sandcheck.reports.results import Check, Results
from sandcheck.reports.soakview import soak_html
from sandcheck.reports.surface import surface_html
from sandcheck.reports.tables import (
    NO_RUNTIME,
    REFERENCE,
    conformance,
    metric_groups,
    problems,
    runtime_columns,
    runtime_label,
    spread_vs_reference,
    totals,
    worst,
)
from sandcheck.reports.upstream import upstream_html
from sandcheck.reports.values import num, scale, stats, unit_kind
from sandcheck.reports.verdict import check_anchor, verdict_html

OUTPUT_LIMIT = 4000
ENV_ENTRIES = 50
"""An environment value with more entries than this (a fleet's per-node facts) is shown
grouped by distinct value, or its first entries; all of it is in results.json."""
TIP_LINES = 5
"""Messages a conformance cell's tooltip lists (a fleet's cell holds a check per node)."""
STATS = ("count", "min", "p05", "p50", "p95", "p99", "max")

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
#pick tr.muted td{color:#7a8293}
#verdict .what{margin-right:14px}#verdict .cost{color:#3a4252;margin-right:14px}
#verdict .cost:before{content:"· ";color:#9aa3b2}
b.ok{color:#17602a}b.bad{color:#9b1c1c}
details.env-all>summary h2{display:inline-block;border:0;margin:24px 0 6px}
details.matrix>summary h2{display:inline-block;border:0;margin:24px 8px 6px 0}
details.failmore{margin:2px 0 10px 6px;font-size:13px}
details.failmore li{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
""" + FLEET_CSS


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def render_html(results: Results) -> str:
    counts = totals(results)
    chips = "".join(f'<span class="chip s-{s}">{n:,} {s}</span>' for s, n in counts.items())
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    fleet = is_fleet(results)
    parts = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        "<title>sandcheck report</title>", f"<style>{CSS}</style></head><body><main>",
        "<h1>sandcheck report</h1>",
        f'<p class="sub">generated {stamp} · {len(results.checks):,} checks · '
        f"{len(results.metrics)} metrics</p><p>{chips}</p>",
        verdict_html(results), pick_html(results), matrix_html(results), surface_html(results),
        upstream_html(results),
        conformance_html(results), failures_html(results, fleet), density_html(results),
        plots_html(results),
        soak_html(results),
        metrics_html(results), other_evidence_html(results, fleet),
        "<details class=env-all><summary><h2>Environment</h2></summary>",
        env_table(results.environment), "</details>", "</main></body></html>",
    ]
    return "\n".join(p for p in parts if p)


def is_fleet(results: Results) -> bool:
    """More node × class cells than FLEET_CELLS: the page keeps to what a browser opens."""
    return len(verdicts(results)) > FLEET_CELLS


def env_table(env: Any) -> str:
    if not isinstance(env, dict) or not env:
        return '<p class="muted">no environment recorded</p>'
    rows = "".join(f"<tr><td>{esc(k)}</td><td>{env_value(v)}</td></tr>" for k, v in env.items())
    return f'<table class="env">{rows}</table>'


def env_value(value: Any) -> str:
    if isinstance(value, (dict, list, tuple)) and len(value) > ENV_ENTRIES:
        return env_many(value)
    if isinstance(value, dict):
        return env_table(value) if value else '<span class="muted">(empty)</span>'
    if isinstance(value, (list, tuple)):
        if all(not isinstance(v, (dict, list, tuple)) for v in value):
            return esc(", ".join(str(v) for v in value))
        return f"<pre>{esc(pretty(value))}</pre>"
    return esc(value)


def env_many(value: dict | list | tuple) -> str:
    """A dict by distinct value (how many keys hold it, the first few); a list's first
    entries. Per-node facts of a thousand nodes read as a handful of rows."""
    note = f'<p class="muted">{len(value):,} entries; all of them in results.json</p>'
    if isinstance(value, dict):
        by: dict[str, list[str]] = {}
        for key, item in value.items():
            by.setdefault(json.dumps(item, sort_keys=True, default=str), []).append(str(key))
        rows = []
        for keys in sorted(by.values(), key=len, reverse=True)[:ENV_ENTRIES]:
            names = ", ".join(keys[:3]) + (f", … +{len(keys) - 3:,}" if len(keys) > 3 else "")
            rows.append(f"<tr><td>{len(keys):,} × ({esc(names)})</td>"
                        f"<td>{env_value(value[keys[0]])}</td></tr>")
        more = len(by) - ENV_ENTRIES
        tail = f'<p class="muted">… {more:,} more distinct values</p>' if more > 0 else ""
        return f'{note}<table class="env">{"".join(rows)}</table>{tail}'
    if all(not isinstance(v, (dict, list, tuple)) for v in value[:10]):
        return f"{note}{esc(', '.join(str(v) for v in value[:10]))} …"
    return f"{note}<pre>{esc(pretty(list(value[:3])))}</pre> …"


def _tip(checks: list[Check]) -> str:
    """A conformance cell's tooltip: each check's status and message, or for many checks
    (a fleet) the count per status and the first few messages."""
    lines = [f"{c.status}: {c.message}" if c.message else c.status for c in checks]
    if len(checks) <= TIP_LINES:
        return "\n".join(lines)
    counts: dict[str, int] = {}
    for c in checks:
        counts[c.status] = counts.get(c.status, 0) + 1
    said = [f"{c.status} on {c.node}: {short(c.message, 200)}" if c.node else
            f"{c.status}: {short(c.message, 200)}"
            for c in checks if c.status != "passed" and c.message][:TIP_LINES]
    return "\n".join([", ".join(f"{n:,} {s}" for s, n in counts.items()), *said])


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
            tip = _tip(checks)
            same = sum(c.status == status for c in checks)
            more = (f" ×{len(checks):,}" if same == len(checks) else f" {same:,}/{len(checks):,}"
                    ) if len(checks) > 1 else ""
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
    where = f" on {check.node}" if check.node else ""
    title = f"{check.id} [{check.runtime or NO_RUNTIME}]{where} — {check.status}"
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


def failures_html(results: Results, fleet: bool = False) -> str:
    """Every failure with its evidence; in a fleet report the first EVIDENCE_PER_CHECK of
    each check and class with it, the others one line each (their evidence stays in
    results.json), so a check failing on thousands of nodes stays a page a browser opens."""
    bad = problems(results)
    if not bad:
        return ""
    head = '<h2>Failures and errors</h2><p class="muted">Each with its evidence: click to expand.'
    if not fleet:
        return head + "</p>" + "".join(check_html(c, open_=True) for c in bad)
    by: dict[tuple[str, str], list[Check]] = {}
    for c in bad:
        by.setdefault((c.runtime or NO_RUNTIME, c.id), []).append(c)
    linked = {g.anchor for g in groups(verdicts(results))}  # what the verdict links to
    parts = [f"{head} A fleet report shows the evidence of the first {EVIDENCE_PER_CHECK} "
             "nodes of each check and class (and of each group's first node above); the "
             "others' is in results.json.</p>"]
    for (runtime, cid), checks in sorted(by.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        checks.sort(key=lambda c: c.node or "")
        parts.append(f"<h3><code>{esc(cid)}</code> [{esc(runtime)}]: {len(checks):,} "
                     f"failure{'s' * (len(checks) != 1)}</h3>")
        full = [c for i, c in enumerate(checks)
                if i < EVIDENCE_PER_CHECK or check_anchor(c) in linked]
        parts += [check_html(c, open_=True) for c in full]
        shown = {id(c) for c in full}
        rest = [c for c in checks if id(c) not in shown]
        if rest:
            items = "".join(f'<li id="{check_anchor(c)}">{esc(c.node or "")}: '
                            f"{esc(short(c.message, 200))}</li>" for c in rest)
            parts.append(f'<details class="failmore"><summary>{len(rest):,} more, their '
                         f"messages</summary><ul>{items}</ul></details>")
    return "".join(parts)


def other_evidence_html(results: Results, fleet: bool = False) -> str:
    """Collapsed, at the end: a certification report keeps the evidence of every check
    (a fleet report in results.json only: inlined per cell it would not open)."""
    rest = [c for c in results.checks if c.status not in ("failed", "error") and c.evidence]
    if not rest:
        return ""
    if fleet:
        return ("<h2>Evidence of the other checks</h2>"
                f'<p class="muted">{len(rest):,} passing and skipped checks carry evidence. '
                f"Above {FLEET_CELLS} node × class cells it is not inlined here: it is in "
                "results.json (checks[].evidence) beside this page.</p>")
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
