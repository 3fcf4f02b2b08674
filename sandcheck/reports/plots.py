"""The report's plots as PNG bytes: start times as box plots with every sample drawn, memory
as median bars with p05-p95 whiskers.

matplotlib is imported on the first plot only: the baseline gate needs none of it.
"""

from __future__ import annotations

import io
import random

from sandcheck.reports.results import Metric
from sandcheck.reports.tables import runtime_label
from sandcheck.reports.values import MIB, finite, num, scale, stats

PLOT_MIN_SAMPLES = 3
"""A metric with fewer samples per runtime than this gets a table row, not a plot."""
PLOT_FIRST = ("startup_total_seconds", "startup_cri_sandbox_to_container_seconds",
              "pss_per_pod_bytes", "startup_first_exec_seconds")
"""The plots a reader looks for first: the start and the memory of each runtime."""


def palette(runtimes: list[str]) -> dict[str, str]:
    base = ["#4c72b0", "#55a868", "#c44e52", "#8172b2", "#ccb974", "#64b5cd", "#dd8452",
            "#937860", "#da8bc3", "#8c8c8c"]
    return {rt: base[i % len(base)] for i, rt in enumerate(runtimes)}


def _figure(rows: int):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.4, 1.25 + 0.5 * rows), dpi=120, layout="constrained")
    return fig, fig.add_subplot()


def png(fig) -> bytes:
    """A matplotlib figure as PNG bytes."""
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
    return png(fig)


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
    return png(fig)
