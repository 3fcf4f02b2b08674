"""The density benchmark's view: per step of pods per node and runtime, the start
percentiles, memory per pod by each method, pods per GiB and the ratios to runc, and one
figure of start p99 and memory per pod against pods per node.

The pod start SLO of Kubernetes' node density tests (p99 of pod start <= 5 s) is drawn on
the figure as a line to read the runtimes against; it is no pass/fail threshold.
"""

from __future__ import annotations

import base64
import html
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from sandcheck.reports.plots import palette, png
from sandcheck.reports.results import Metric, Results, summarize
from sandcheck.reports.spread import median_ratio, ratio_text
from sandcheck.reports.tables import REFERENCE, runtime_columns
from sandcheck.reports.values import MIB, finite, num

START = "density_start_seconds"
PSS = "density_pss_per_pod_bytes"
CGROUP = "density_cgroup_per_pod_bytes"
DROP = "density_memory_available_drop_per_pod_bytes"
PER_GIB = "density_pods_per_gib"
METRICS = (START, PSS, CGROUP, DROP, PER_GIB)
"""Every metric the benchmark records, once per runtime and step (label ``step``: pods per
node asked for; ``pods``: pods running when it was measured)."""
START_SLO = 5.0
"""Kubernetes' pod startup SLO at node density, in seconds: p99 within 5 s."""
PNG_NAME = "density.png"


@dataclass
class Cell:
    """One runtime at one step: its metrics by name."""

    runtime: str
    step: int
    pods: int
    metrics: dict[str, Metric] = field(default_factory=dict)

    def samples(self, name: str) -> list[float]:
        m = self.metrics.get(name)
        return [float(s) for s in m.samples if finite(s)] if m else []

    def median(self, name: str) -> float:
        values = self.samples(name)
        return statistics.median(values) if values else math.nan

    def start(self, statistic: str) -> float:
        return summarize(self.samples(START)).get(statistic, math.nan)

    @property
    def failures(self) -> int:
        m = self.metrics.get(START)
        return m.failures if m else 0


def cells(results: Results) -> list[Cell]:
    """Every (runtime, step) the benchmark recorded, by step, runc first within a step."""
    found: dict[tuple[str, int], Cell] = {}
    for m in results.metrics:
        if m.name not in METRICS or not str(m.labels.get("step", "")).isdigit():
            continue
        step = int(m.labels["step"])
        pods = int(m.labels.get("pods", step)) if str(m.labels.get("pods", step)).isdigit() \
            else step
        cell = found.setdefault((m.runtime, step), Cell(m.runtime, step, pods))
        cell.metrics[m.name] = m
    order = {rt: i for i, rt in enumerate(runtime_columns(results))}
    return sorted(found.values(), key=lambda c: (c.step, order.get(c.runtime, len(order))))


def against_reference(cell: Cell, ref: Cell | None, name: str) -> str:
    """The ratio of medians to runc's at the same step with its 95 % interval (samples on
    both sides), a bare ratio for one figure per side, "" for runc itself."""
    if ref is None or cell is ref:
        return ""
    mine, theirs = cell.samples(name), ref.samples(name)
    if not mine or not theirs:
        return "n/a"
    if min(len(mine), len(theirs)) < 2:
        value = statistics.median(mine) / statistics.median(theirs) \
            if statistics.median(theirs) > 0 else math.nan
        return f"{num(value)}× {REFERENCE}" if finite(value) else "n/a"
    return ratio_text(median_ratio(mine, theirs), REFERENCE)


def _mib(value: float) -> str:
    return f"{num(value / MIB)} MiB" if finite(value) else "n/a"


def _seconds(value: float) -> str:
    return f"{num(value)} s" if finite(value) else "n/a"


COLUMNS = ("runtime", "step", "pods", "start p50", "start p95", "start p99", "failed",
           "PSS/pod", "cgroup/pod", "MemAvailable/pod", "pods/GiB",
           "start vs runc", "PSS vs runc", "MemAvailable vs runc")


def rows(results: Results) -> list[list[str]]:
    """The table's rows, one per runtime and step (see COLUMNS)."""
    found = cells(results)
    refs = {c.step: c for c in found if c.runtime == REFERENCE}
    out = []
    for c in found:
        ref = refs.get(c.step)
        per_gib = c.median(PER_GIB)
        out.append([c.runtime, str(c.step), str(c.pods), _seconds(c.start("p50")),
                    _seconds(c.start("p95")), _seconds(c.start("p99")), str(c.failures),
                    _mib(c.median(PSS)), _mib(c.median(CGROUP)), _mib(c.median(DROP)),
                    num(per_gib) if finite(per_gib) else "n/a",
                    against_reference(c, ref, START) or "reference",
                    against_reference(c, ref, PSS) or "reference",
                    against_reference(c, ref, DROP) or "reference"])
    return out


NOTE = (f"Idle pods added to one node in cumulative steps; start: create to first exec "
        f"output of the pods started in that step; memory per pod at the step's end over all "
        f"the runtime's pods on the node (PSS and cgroup: median per pod; MemAvailable: drop "
        f"since before the first pod / pods); pods per GiB by MemAvailable. Ratios: medians "
        f"against runc's at the same step with a bootstrap 95% interval where both sides have "
        f"samples. The dashed line is Kubernetes' pod start SLO (p99 <= {START_SLO:g} s), "
        f"drawn to read against, not asserted.")


# ---- the figure ----

def figure_png(results: Results) -> bytes | None:
    """Start p99 (with the SLO line) and memory per pod (PSS solid, MemAvailable dashed)
    against pods per node, a line per runtime; None without density metrics."""
    found = [c for c in cells(results) if c.samples(START) or c.samples(PSS)]
    if not found:
        return None
    from matplotlib.figure import Figure

    runtimes = list(dict.fromkeys(c.runtime for c in found))
    colors = palette(runtime_columns(results))
    fig = Figure(figsize=(10.8, 4.0), dpi=120, layout="constrained")
    start_ax, memory_ax = fig.subplots(1, 2)
    highest, most = START_SLO, 1.0
    for rt in runtimes:
        mine = [c for c in found if c.runtime == rt]
        color = colors.get(rt, "#4c72b0")
        p99 = [(c.pods, c.start("p99")) for c in mine if finite(c.start("p99"))]
        if p99:
            start_ax.plot(*zip(*p99, strict=True), marker="o", color=color, label=rt)
            highest = max(highest, max(v for _, v in p99))
        for name, style, marker, what in ((PSS, "-", "o", "PSS"),
                                          (DROP, "--", "s", "MemAvailable")):
            points = [(c.pods, c.median(name) / MIB) for c in mine if finite(c.median(name))]
            if points:
                memory_ax.plot(*zip(*points, strict=True), linestyle=style, marker=marker,
                               color=color, label=f"{rt} {what}")
                most = max(most, max(v for _, v in points))
    start_ax.axhline(START_SLO, color="#9b1c1c", linestyle="--", linewidth=1.2,
                     label=f"pod start SLO: p99 ≤ {START_SLO:g} s")
    start_ax.set_ylim(0, highest * 1.12)
    start_ax.set_title("pod start p99 (create to first exec)", fontsize=11, loc="left")
    start_ax.set_ylabel("seconds")
    memory_ax.set_title("memory per pod", fontsize=11, loc="left")
    memory_ax.set_ylabel("MiB per pod")
    memory_ax.set_ylim(0, most * 1.45)  # headroom: the legend sits above the lines
    for ax in (start_ax, memory_ax):
        ax.set_xlabel("pods per node")
        ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
    start_ax.legend(fontsize=8, loc="center right")
    memory_ax.legend(fontsize=8, loc="upper center", ncol=2)
    return png(fig)


def write_png(results: Results, report_dir: Path) -> list[Path]:
    """density.png beside report.html, when the run has density metrics."""
    image = figure_png(results)
    if image is None:
        return []
    path = Path(report_dir) / PNG_NAME
    path.write_bytes(image)
    return [path]


# ---- HTML and Markdown ----

def density_html(results: Results) -> str:
    table = rows(results)
    if not table:
        return ""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = "".join("<tr>" + "".join(
        f'<td{"" if i in (0, 11, 12, 13) else " class=num"}>{html.escape(v)}</td>'
        for i, v in enumerate(row)) + "</tr>" for row in table)
    image = figure_png(results)
    figure = ""
    if image:
        src = "data:image/png;base64," + base64.b64encode(image).decode("ascii")
        figure = (f'<figure class="density"><img src="{src}" alt="density: start p99 and '
                  f'memory per pod against pods per node" style="max-width:100%"></figure>')
    return (f'<h2 id="density">Density</h2><p class="muted">{html.escape(NOTE)}</p>'
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{figure}")


def density_markdown(results: Results) -> list[str]:
    table = rows(results)
    if not table:
        return []
    out = ["## Density", "", "| " + " | ".join(COLUMNS) + " |",
           "|" + "|".join("---" if i in (0, 11, 12, 13) else "--:" for i in range(len(COLUMNS)))
           + "|"]
    out += ["| " + " | ".join(v.replace("|", "\\|") for v in row) + " |" for row in table]
    return out + ["", f"_{NOTE} The figure is in report.html and {PNG_NAME}._", ""]
