"""The node × runtime-class matrix of a ``--nodes`` run, and the verdict of each cell.

A fleet differs node by node, so the question a certifier asks is per cell: does class X
conform on node N? A cell is *pass* when its checks ran and none failed, *fail* naming
the failing checks, *missing* when the node lacks the class (every check of the cell
skipped as "missing on node ..."), *skipped* when nothing could be checked for another
reason. Checks of a run without ``--nodes`` carry no node and are left out.

Above FLEET_CELLS cells a run is a fleet's: the matrix comes collapsed (the verdict lines
and the grouped failures of fleetview.py come first), and its failing cells are not listed
one by one under it.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field

from sandcheck.clusters.fleet import MISSING_PREFIX
from sandcheck.reports.results import Check, Results

FLEET_CELLS = 50
"""More node × class cells than this make a fleet report: the matrix collapsed, evidence
of passing and skipped checks left in results.json, failures' evidence inlined for the
first few nodes of each check (page.py says it on the page)."""
VERDICT_ICONS = {"pass": "✅ pass", "fail": "❌ fail", "missing": "∅ missing",
                 "skipped": "⏭ skipped"}


def cell_anchor(check_id: str, runtime: str | None, node: str | None) -> str:
    """The HTML id of a check's evidence on the page (verdict lines link to it)."""
    key = f"{check_id}-{runtime or 'any'}-{node or ''}"
    return "check-" + re.sub(r"[^a-z0-9]+", "-", key.lower()).strip("-")


@dataclass
class Verdict:
    node: str
    runtime: str
    verdict: str
    """pass, fail, missing, skipped."""
    failing: list[str] = field(default_factory=list)
    passed: int = 0
    skipped: int = 0
    reason: str = ""
    first_message: str = ""
    """The first line of the first failing check's message (a fail), else the reason."""

    def to_dict(self) -> dict:
        return {"node": self.node, "runtime_class": self.runtime, "verdict": self.verdict,
                "failing_checks": self.failing, "passed": self.passed,
                "skipped": self.skipped, "reason": self.reason}


def verdict_of(node: str, runtime: str, checks: list[Check]) -> Verdict:
    failing = sorted({c.id for c in checks if c.status in ("failed", "error")})
    passed = sum(c.status == "passed" for c in checks)
    skipped = [c for c in checks if c.status == "skipped"]
    v = Verdict(node=node, runtime=runtime, verdict="pass", failing=failing, passed=passed,
                skipped=len(skipped))
    if failing:
        v.verdict = "fail"
        firsts = [next(c.message for c in checks if c.id == f and c.status in
                       ("failed", "error")).split("\n", 1)[0] for f in failing]
        v.reason = "; ".join(m[:200] for m in firsts)
        v.first_message = firsts[0]
    elif passed == 0:
        # pytest words a skip's message "Skipped: <reason>"
        missing = next((c.message.removeprefix("Skipped: ") for c in skipped
                        if c.message.removeprefix("Skipped: ").startswith(MISSING_PREFIX)), "")
        v.verdict = "missing" if missing else "skipped"
        v.reason = missing or (skipped[0].message if skipped else "no check ran")
        v.first_message = v.reason
    return v


def verdicts(results: Results) -> list[Verdict]:
    """One verdict per node × runtime class seen in the results, nodes then classes sorted."""
    cells: dict[tuple[str, str], list[Check]] = {}
    for c in results.checks:
        if c.node and c.runtime:
            cells.setdefault((c.node, c.runtime), []).append(c)
    return [verdict_of(n, r, cs) for (n, r), cs in sorted(cells.items())]


def _grid(results: Results) -> tuple[list[str], list[str], dict[tuple[str, str], Verdict]]:
    vs = verdicts(results)
    nodes = sorted({v.node for v in vs})
    runtimes = sorted({v.runtime for v in vs})
    return nodes, runtimes, {(v.node, v.runtime): v for v in vs}


def fingerprint_line(results: Results, node: str) -> str:
    fp = (results.environment.get("node_fingerprints") or {}).get(node) or {}
    parts = [fp.get(k) for k in ("kernel", "kubelet", "container_runtime")]
    return " · ".join(str(p) for p in parts if p)


def tally(grid: dict[tuple[str, str], Verdict]) -> str:
    """``2,951 pass · 9 fail · 40 missing`` over the cells (verdicts that occur)."""
    counts = {k: sum(v.verdict == k for v in grid.values()) for k in VERDICT_ICONS}
    return " · ".join(f"{n:,} {k}" for k, n in counts.items() if n)


def matrix_markdown(results: Results) -> list[str]:
    nodes, runtimes, grid = _grid(results)
    if not nodes:
        return []
    fleet = len(grid) > FLEET_CELLS
    out = ["## Nodes × runtime classes", ""]
    if fleet:  # GitHub renders Markdown inside <details> when blank lines surround it
        out += [f"<details><summary>{len(nodes):,} nodes × {len(runtimes)} classes: "
                f"{tally(grid)} (click to open)</summary>", ""]
    out += ["| node | " + " | ".join(runtimes) + " | kernel · kubelet · runtime |",
            "|---|" + "---|" * len(runtimes) + "---|"]
    for node in nodes:
        cells = []
        for rt in runtimes:
            v = grid.get((node, rt))
            cells.append(VERDICT_ICONS[v.verdict] if v else "·")
        out.append(f"| `{node}` | " + " | ".join(cells) + f" | {fingerprint_line(results, node)} |")
    out.append("")
    if fleet:  # the failing cells are grouped in the verdict above
        return out + ["</details>", ""]
    for v in [v for v in grid.values() if v.verdict in ("fail", "missing")]:
        detail = ", ".join(f"`{f}`" for f in v.failing) if v.failing else v.reason
        out.append(f"- {VERDICT_ICONS[v.verdict]} `{v.node}` × `{v.runtime}`: {detail}")
    return out + [""]


_CSS = {"pass": "s-passed", "fail": "s-failed", "missing": "s-skipped", "skipped": "s-skipped"}


def _cell_html(v: Verdict | None) -> str:
    if v is None:
        return '<td class="none">·</td>'
    tip = ", ".join(v.failing) or v.reason or f"{v.passed} passed"
    return (f'<td class="st {_CSS[v.verdict]}" title="{html.escape(tip)}">'
            f"{html.escape(VERDICT_ICONS[v.verdict])}</td>")


def matrix_html(results: Results) -> str:
    nodes, runtimes, grid = _grid(results)
    if not nodes:
        return ""
    head = "".join(f"<th>{html.escape(r)}</th>" for r in runtimes)
    rows = [f"<tr><td><code>{html.escape(node)}</code></td>"
            + "".join(_cell_html(grid.get((node, rt))) for rt in runtimes)
            + f"<td>{html.escape(fingerprint_line(results, node))}</td></tr>" for node in nodes]
    table = (f"<table><thead><tr><th>node</th>{head}"
             f"<th>kernel · kubelet · container runtime</th></tr></thead>"
             f"<tbody>{''.join(rows)}</tbody></table>")
    if len(grid) <= FLEET_CELLS:
        return f"<h2>Nodes × runtime classes</h2>{table}"
    return ('<details class="matrix" id="matrix"><summary><h2>Nodes × runtime classes</h2> '
            f'<span class="muted">{len(nodes):,} nodes × {len(runtimes)} classes: '
            f"{html.escape(tally(grid))} (click to open)</span></summary>{table}</details>")
