"""The report's first lines: one verdict per runtime, then whether the start figure shows
the runtime (the Kubernetes start next to the CRI start of the same pods).

A reader opens a report to learn which runtimes isolate and what each costs next to runc;
those answers come first, each failing check named with a link to its evidence, each cost
with the spread of its ratio to runc. The conformance matrix, plots, tables and the
environment follow in page.py and summary.py.
"""

from __future__ import annotations

import html
import statistics
from dataclasses import dataclass, field

from sandcheck.reports.fleetview import ClassTally, class_tallies, fleet_html, fleet_markdown
from sandcheck.reports.matrix import cell_anchor, verdicts
from sandcheck.reports.results import Check, Results
from sandcheck.reports.spread import NOTHING, Spread, median_ratio, ratio_text
from sandcheck.reports.startcompare import CRI_START, HEADLINE, compare_starts

REFERENCE = "runc"
MEMORY = "pss_per_pod_bytes"
MIB = 1024 * 1024
BAD = ("failed", "error")
ISOLATION_SUITES = ("isolation.", "security.")
"""The checks of what a runtime isolates (the isolation and security suites)."""


def check_anchor(check: Check) -> str:
    """The HTML id of a check's evidence (verdict lines link to it)."""
    return cell_anchor(check.id, check.runtime, getattr(check, "node", None))


@dataclass
class Cost:
    median: float | None = None
    count: int = 0
    ratio: Spread = NOTHING


@dataclass
class RuntimeVerdict:
    runtime: str
    checks: list[Check] = field(default_factory=list)
    startup: Cost = field(default_factory=Cost)
    memory: Cost = field(default_factory=Cost)
    not_runnable: str | None = None
    """Why the backend left the runtime out (its binaries or host precondition)."""

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status in BAD]

    @property
    def passed(self) -> int:
        return sum(c.status == "passed" for c in self.checks)

    @property
    def skipped(self) -> int:
        return sum(c.status == "skipped" for c in self.checks)

    @property
    def deviations(self) -> int:
        """Upstream specs the runtime declares it does not meet (they fail nothing)."""
        return sum(c.status == "deviation" for c in self.checks)

    @property
    def status(self) -> str:
        if self.failed:
            return "failed"
        return "passed" if self.passed else "skipped"

    def checks_text(self) -> str:
        if self.not_runnable is not None:
            return f"not runnable here: {self.not_runnable}"
        if not self.checks:
            return "no checks run"
        if self.failed:
            return f"{len(self.failed):,} of {len(self.checks):,} checks failed"
        skipped = f", {self.skipped:,} skipped" if self.skipped else ""
        if self.deviations:
            skipped += f", {self.deviations} declared deviation{'s' * (self.deviations != 1)}"
        counted = f"{self.passed:,} of {len(self.checks):,} checks passed{skipped}"
        if not any(c.id.startswith("isolation.") for c in self.checks):
            return counted
        if self.isolation_deviations:
            return f"isolates, with declared deviations: {counted}"
        return f"isolates as expected: {counted}"

    @property
    def isolation_deviations(self) -> list[Check]:
        """Isolation and security checks the runtime is declared not to meet."""
        return [c for c in self.checks
                if c.status == "deviation" and c.id.startswith(ISOLATION_SUITES)]


def _cost(results: Results, name: str, runtime: str) -> Cost:
    metric = results.metric(name, runtime)
    if metric is None or not metric.samples:
        return Cost()
    cost = Cost(statistics.median(metric.samples), len(metric.samples))
    ref = results.metric(name, REFERENCE)
    if runtime != REFERENCE and ref is not None and ref.samples:
        cost.ratio = median_ratio(metric.samples, ref.samples)
    return cost


def runtime_verdicts(results: Results) -> list[RuntimeVerdict]:
    """One per runtime of the run, runc first, and one per runtime the backend left out
    (``runtimes_not_runnable`` in the environment), saying why."""
    left_out = results.environment.get("runtimes_not_runnable") or {}
    names = results.runtimes()
    names += [n for n in left_out if n not in names]
    if REFERENCE in names:
        names = [REFERENCE] + [n for n in names if n != REFERENCE]
    return [RuntimeVerdict(rt, [c for c in results.checks if c.runtime == rt],
                           _cost(results, HEADLINE, rt), _cost(results, MEMORY, rt),
                           left_out.get(rt))
            for rt in names]


def cost_text(cost: Cost, runtime: str, unit: str) -> str:
    if cost.median is None:
        return ""
    value = f"{cost.median:.3f} s" if unit == "s" else f"{cost.median / MIB:.1f} MiB"
    if runtime == REFERENCE:
        return f"{value} (reference)"
    return f"{value}, {ratio_text(cost.ratio)}"


def _costs(v: RuntimeVerdict) -> list[str]:
    parts = []
    start = cost_text(v.startup, v.runtime, "s")
    if start:
        parts.append(f"start {start}")
    memory = cost_text(v.memory, v.runtime, "MiB")
    if memory:
        parts.append(f"memory per pod (PSS) {memory}")
    return parts


# ---- HTML ----

def _fleet_line(v: RuntimeVerdict, t: ClassTally) -> tuple[str, str]:
    """(status, HTML) of a class's line in a run with nodes: nodes first, then checks."""
    parts = [html.escape(p) for p in t.parts()]
    if t.failed:
        parts[1] = f'<b class="bad">{parts[1]}</b>'
    loose = {c.id: c for c in v.failed if not c.node}  # checks of the class on no node
    links = ", ".join(f'<a href="#{check_anchor(c)}"><code>{html.escape(i)}</code></a>'
                      for i, c in loose.items())
    checks = html.escape(v.checks_text()) + (f" (on no node: {links})" if links else "")
    status = "failed" if t.failed or loose else t.status
    costs = "".join(f'<span class="cost">{html.escape(c)}</span>' for c in _costs(v))
    return status, (f'<span class="what">{" · ".join(parts)}</span>'
                    f'<span class="cost">{checks}</span>{costs}')


def verdict_html(results: Results) -> str:
    cells = verdicts(results)
    tallies = class_tallies(cells)
    lines = []
    for v in runtime_verdicts(results):
        tally = tallies.get(v.runtime)
        if tally is not None:
            status, inner = _fleet_line(v, tally)
            lines.append(f'<div class="verdict v-{status}"><b>{html.escape(v.runtime)}</b>'
                         f"{inner}</div>")
            continue
        failed = ", ".join(f'<a href="#{check_anchor(c)}"><code>{html.escape(c.id)}</code></a>'
                           for c in v.failed)
        text = html.escape(v.checks_text()) + (f": {failed}" if failed else "")
        costs = "".join(f'<span class="cost">{html.escape(c)}</span>' for c in _costs(v))
        lines.append(f'<div class="verdict v-{v.status}"><b>{html.escape(v.runtime)}</b>'
                     f'<span class="what">{text}</span>{costs}</div>')
    if not lines:
        return ""
    return ('<section id="verdict"><h2>Verdict</h2>' + "".join(lines) + fleet_html(cells)
            + "</section>" + start_comparison_html(results))


def start_comparison_html(results: Results) -> str:
    rows = compare_starts(results)
    if not rows:
        return ""
    body = []
    for c in rows:
        mark = {True: '<b class="ok">follows the runtime</b>',
                False: '<b class="bad">hides the runtime</b>', None: "n/a"}[c.follows]
        body.append(
            f"<tr><td>{html.escape(c.runtime)} − {REFERENCE}</td>"
            f'<td class="num">{c.headline_diff.value * 1000:+.0f} ms</td>'
            f'<td class="num">{c.cri_diff.value * 1000:+.0f} ms</td>'
            f'<td class="num">{c.headline_ratio.value:.2f}×</td>'
            f'<td class="num">{c.cri_ratio.value:.2f}×</td>'
            f'<td class="num">{c.gap * 1000:+.0f} ms (±{c.tolerance * 1000:.0f})</td>'
            f"<td>{mark}</td></tr>")
    return ("<h3>Does the headline start show the runtime?</h3>"
            f'<p class="muted">Difference of medians, same pods, same run: <code>{HEADLINE}'
            f"</code> ({html.escape(headline_meaning(results))}) against "
            f"<code>{CRI_START}</code> (containerd's own sandbox creation to container "
            "start). The headline follows the runtime when the gap is within 25 % of the "
            "CRI difference or 50 ms.</p>"
            "<table><thead><tr><th>runtime</th><th class=num>Δ headline</th>"
            "<th class=num>Δ CRI</th><th class=num>headline ratio</th>"
            "<th class=num>CRI ratio</th><th class=num>gap (tolerance)</th><th></th></tr>"
            f"</thead><tbody>{''.join(body)}</tbody></table>")


def headline_meaning(results: Results) -> str:
    """What the headline start spans at the level the run's pods were made."""
    if results.environment.get("backend_level") == "Kubernetes":
        return ("create call to the container's start by containerd's clock, plus the first "
                "exec; kubelet reports Running only at its next 1 s relist, shown beside it "
                "as startup_scheduled_to_running_seconds")
    return "the backend's own start calls (CRI runp, create, start), plus the first exec"


# ---- Markdown ----

ICON = {"passed": "✅", "failed": "❌", "skipped": "⏭"}


def verdict_markdown(results: Results) -> list[str]:
    cells = verdicts(results)
    tallies = class_tallies(cells)
    out = []
    for v in runtime_verdicts(results):
        tally = tallies.get(v.runtime)
        if tally is not None:
            loose = sorted({f"`{c.id}`" for c in v.failed if not c.node})
            checks = v.checks_text() + (f" (on no node: {', '.join(loose)})" if loose else "")
            icon = ICON["failed" if tally.failed or loose else tally.status]
            out.append(f"- {icon} **{v.runtime}**: "
                       + " · ".join([*tally.parts(), checks, *_costs(v)]))
            continue
        failed = ", ".join(f"`{c.id}`" for c in v.failed)
        text = v.checks_text() + (f": {failed}" if failed else "")
        out.append(f"- {ICON[v.status]} **{v.runtime}**: " + " · ".join([text, *_costs(v)]))
    if not out:
        return []
    out = ["## Verdict", "", *out, "", *fleet_markdown(cells)]
    rows = compare_starts(results)
    if rows:
        out += ["**Does the headline start show the runtime?** (difference of medians, "
                f"same pods: `{HEADLINE}` vs `{CRI_START}`)", ""]
        out += [f"- {c.sentence()}" for c in rows] + [""]
    return out
