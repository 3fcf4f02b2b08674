"""The soak in a report: per runtime, what the run held after each round of pods, its fit
(grew, flat, or too few counts to tell) and a plot of the counts over the pods cycled,
read from the soak check's evidence (``soak``: the shape SoakRun.as_evidence writes).
"""

from __future__ import annotations

import base64
import html
from typing import Any

from sandcheck.host.footprint import is_count
from sandcheck.judges.growth import WARMUP_SAMPLES, Trend, trends
from sandcheck.reports.plots import palette, png
from sandcheck.reports.results import Results
from sandcheck.reports.values import MIB

SOAK_CHECK = "performance.soak_leaves_nothing_behind"


def soak_runs(results: Results) -> list[dict[str, Any]]:
    """Each runtime's soak evidence, in the run's order."""
    return [item["soak"] for c in results.checks if c.id == SOAK_CHECK
            for item in c.evidence or [] if isinstance(item, dict)
            and isinstance(item.get("soak"), dict) and item["soak"].get("series")]


def trends_of(run: dict[str, Any]) -> list[Trend]:
    return trends(run["pods"], run["series"])


def _value(value: float | None, count: bool) -> str:
    if value is None:
        return "·"
    return f"{value:g}" if count else f"{value / MIB:.1f} MiB"


def _verdict(t: Trend) -> str:
    if not t.judged:
        return "too few counts"
    return "GREW" if t.grew else "flat"


def rows(run: dict[str, Any]) -> list[list[str]]:
    """resource, at start, first judged, last, fit growth, tau, verdict."""
    out = []
    for t in trends_of(run):
        count = is_count(t.resource)
        first = t.values[t.judged_from] if t.judged_from < len(t.values) else None
        growth = t.growth
        shown = "·" if growth is None else (f"{growth:+.1f}" if count
                                            else f"{growth / MIB:+.1f} MiB")
        out.append([t.resource, _value(t.values[0], count), _value(first, count),
                    _value(t.values[-1], count), shown,
                    "·" if t.tau is None else f"{t.tau:.2f}", _verdict(t)])
    return out


HEADER = ["resource", "before any pod", "after warm-up", "last", "fit over the pods",
          "Kendall tau", "verdict"]


def soak_plot(run: dict[str, Any], color: str) -> bytes | None:
    """Two panels over the soak's time: memory (MiB) and counts, one line per resource,
    the warm-up shaded, the pods cycled on the top axis."""
    from matplotlib.figure import Figure

    pods, series = run["pods"], run["series"]
    seconds = run.get("seconds") or pods
    if len(pods) < 2:
        return None
    fig = Figure(figsize=(9.0, 3.0), dpi=110, layout="constrained")
    memory, counts = fig.subplots(1, 2)
    for name, values in series.items():
        if is_count(name):
            if max(values) > 0:
                counts.plot(seconds, values, marker=".", label=name)
        else:
            memory.plot(seconds, [v / MIB for v in values], marker=".", label=name)
    for ax, label in ((memory, "MiB"), (counts, "count")):
        ax.set_xlabel("seconds since the soak began")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
        ax.axvspan(seconds[0], seconds[min(1 + WARMUP_SAMPLES, len(seconds) - 1)],
                   color="#9aa3b2", alpha=0.15, lw=0)
        top = ax.secondary_xaxis("top", functions=(
            lambda x: _interp(x, seconds, pods), lambda x: _interp(x, pods, seconds)))
        top.set_xlabel("pods cycled", fontsize=8)
        if ax.lines:
            ax.legend(fontsize=7, loc="best")
    memory.set_title(f"{run['runtime']}: memory after each round", fontsize=10, loc="left",
                     color=color)
    counts.set_title("counts after each round (warm-up shaded)", fontsize=10, loc="left")
    return png(fig)


def _interp(x, xs: list[float], ys: list[float]):
    """Piecewise-linear map from ``xs`` to ``ys`` (the plot's second axis), numpy's."""
    import numpy

    return numpy.interp(x, xs, ys)


def soak_html(results: Results) -> str:
    runs = soak_runs(results)
    if not runs:
        return ""
    colors = palette([r["runtime"] for r in runs])
    parts = ["<h2 id=\"soak\">Soak: what the run held as pods were cycled</h2>"]
    for run in runs:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADER)
        body = "".join("<tr>" + "".join(
            f"<td{' class=bad' if cell == 'GREW' else ''}>{html.escape(cell)}</td>"
            for cell in row) + "</tr>" for row in rows(run))
        parts.append(f"<h3>{html.escape(run['runtime'])}: {run['cycles']} pods, "
                     f"{run['failed']} failed, {len(run['pods'])} counts</h3>"
                     f"<table><tr>{head}</tr>{body}</table>")
        png = soak_plot(run, colors[run["runtime"]])
        if png:
            src = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
            parts.append(f'<figure><img src="{src}" alt="soak {html.escape(run["runtime"])}">'
                         "</figure>")
    return "".join(parts)


def soak_markdown(results: Results) -> list[str]:
    runs = soak_runs(results)
    if not runs:
        return []
    lines = ["", "## Soak: what the run held as pods were cycled", ""]
    for run in runs:
        lines += [f"**{run['runtime']}**: {run['cycles']} pods, {run['failed']} failed, "
                  f"{len(run['pods'])} counts", "", "| " + " | ".join(HEADER) + " |",
                  "|" + "---|" * len(HEADER)]
        lines += ["| " + " | ".join(row) + " |" for row in rows(run)]
        lines.append("")
    return lines
