"""The verdict of a fleet: per runtime class, on how many nodes it passed, failed or was
skipped, then the failing nodes grouped by what failed.

A fleet of a thousand nodes that fails one check on three hundred of them must read as one
line ("isolation.devices_minimal failed on 300 nodes: a, b, … (first message: …)"), not
three hundred: cells of one class that fail the same set of checks form one group, and so
do the cells of one class that lack it (missing) or skipped for another reason. Groups
come largest first; each names a few nodes, the rest behind a click, and a bounded piece
of the first node's message. verdict.py puts this under the verdict lines of
report.html and summary.md whenever the run has node × class cells.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

from sandcheck.clusters.fleet import MISSING_PREFIX
from sandcheck.reports.matrix import FLEET_CELLS, Verdict, cell_anchor

NAMES_SHOWN = 6
"""Node names a group line shows before "+N more"."""
CHECKS_SHOWN = 3
"""Check ids a group line names before "and N more"."""
GROUPS_SHOWN = 8
"""Groups of failing cells on the first screen; the others one click away."""
MESSAGE_CHARS = 180
"""What a group line shows of its first message (whitespace collapsed)."""
EVIDENCE_PER_CHECK = 3
"""In a fleet report, failures of one check and class whose evidence the page inlines."""


@dataclass
class ClassTally:
    """One runtime class over the fleet: nodes by the verdict of their cell."""

    runtime: str
    passed: int = 0
    failed: int = 0
    missing: int = 0
    skipped: int = 0
    """Skipped for another reason than a missing class (every check skipped)."""

    @property
    def nodes(self) -> int:
        return self.passed + self.failed + self.missing + self.skipped

    @property
    def status(self) -> str:
        return "failed" if self.failed else "passed" if self.passed else "skipped"

    def parts(self) -> list[str]:
        """``659 of 1,000 nodes passed``, ``301 failed``, ``40 skipped (class missing on
        40)``: the words of a verdict line."""
        out = [f"{self.passed:,} of {self.nodes:,} node{'s' * (self.nodes != 1)} passed",
               f"{self.failed:,} failed"]
        gaps = self.missing + self.skipped
        if gaps:
            why = f" (class missing on {self.missing:,})" if self.missing else ""
            out.append(f"{gaps:,} skipped{why}")
        return out


def class_tallies(vs: list[Verdict]) -> dict[str, ClassTally]:
    out: dict[str, ClassTally] = {}
    for v in vs:
        t = out.setdefault(v.runtime, ClassTally(v.runtime))
        key = {"pass": "passed", "fail": "failed"}.get(v.verdict, v.verdict)
        setattr(t, key, getattr(t, key) + 1)
    return out


@dataclass
class Group:
    """Cells of one class with one outcome: the same failing checks, or the class missing,
    or every check skipped."""

    runtime: str
    verdict: str
    checks: tuple[str, ...] = ()
    nodes: list[str] = field(default_factory=list)
    message: str = ""
    """The first node's (a failure's first line, or why the cell skipped)."""

    @property
    def anchor(self) -> str:
        """The evidence of the group's first failure on the page."""
        return cell_anchor(self.checks[0], self.runtime, self.nodes[0]) if self.checks else ""


def short(text: str, limit: int = MESSAGE_CHARS) -> str:
    """One line of at most ``limit`` characters."""
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _gap_message(v: Verdict) -> str:
    """Why the cell skipped, without the node's name (every node of the group differs)."""
    reason = v.reason.removeprefix("Skipped: ")
    if reason.startswith(MISSING_PREFIX):
        reason = reason.partition(": ")[2] or reason
    return reason


def groups(vs: list[Verdict]) -> list[Group]:
    """Failing groups first, largest first; then missing and skipped ones per class."""
    fails: dict[tuple[str, tuple[str, ...]], Group] = {}
    gaps: dict[tuple[str, str], Group] = {}
    for v in vs:
        if v.verdict == "fail":
            key = (v.runtime, tuple(v.failing))
            g = fails.setdefault(key, Group(v.runtime, "fail", key[1], message=v.first_message))
        elif v.verdict in ("missing", "skipped"):
            g = gaps.setdefault((v.runtime, v.verdict),
                                Group(v.runtime, v.verdict, message=_gap_message(v)))
        else:
            continue
        g.nodes.append(v.node)
    order = sorted(fails.values(), key=lambda g: (-len(g.nodes), g.runtime, g.checks))
    return order + sorted(gaps.values(), key=lambda g: (g.verdict, -len(g.nodes), g.runtime))


def _what(g: Group) -> str:
    """``isolation.x failed``, ``21 checks failed: a, b, c and 18 more``, ``missing``."""
    if g.verdict != "fail":
        return "class missing" if g.verdict == "missing" else "every check skipped"
    if len(g.checks) <= CHECKS_SHOWN:
        return " and ".join(g.checks) + " failed"
    return (f"{len(g.checks)} checks failed: {', '.join(g.checks[:CHECKS_SHOWN])} and "
            f"{len(g.checks) - CHECKS_SHOWN} more")


def _on(g: Group) -> str:
    return f"on {len(g.nodes):,} node{'s' * (len(g.nodes) != 1)}"


def fleet_note(cells: int, nodes: int, classes: int) -> str:
    """What a fleet report leaves out, and where it is."""
    return (f"{cells:,} node × class cells ({nodes:,} nodes × {classes} classes). Above "
            f"{FLEET_CELLS} cells the report is a fleet's: the node × class matrix is "
            "collapsed, the evidence of passing and skipped checks is left in results.json "
            f"(checks[].evidence), and failures show their evidence for the first "
            f"{EVIDENCE_PER_CHECK} nodes of each check and class (the others their message; "
            "all of it is in results.json).")


# ---- HTML ----

CSS = """
#verdict .groups{margin:10px 0 4px}
#verdict .grp{background:#fff;border:1px solid #d9dde5;border-left:4px solid #9b1c1c;
 padding:4px 12px;margin:4px 0;font-size:13.5px;line-height:1.4}
#verdict .g-missing,#verdict .g-skipped{border-left-color:#9aa3b2}
#verdict .grp .rt{font-weight:600;display:inline-block;min-width:56px}
#verdict .grp .n{font-weight:600}#verdict .grp code{white-space:nowrap}
#verdict .grp .first{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;
 color:#5b6475;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
#verdict .g-fail .first{color:#9b1c1c}
#verdict details.more{display:inline}#verdict details.more>summary{display:inline;
 color:#2a5bd7}
#verdict details.more[open]>summary{display:block}
#verdict .names{font-size:12px;color:#3a4252;max-height:160px;overflow:auto}
#verdict details.groups-more>summary{color:#2a5bd7;font-size:13.5px}
#verdict p.fleet-note{font-size:12.5px;margin:6px 0 0}
"""


def _names_html(nodes: list[str]) -> str:
    shown = ", ".join(f"<code>{html.escape(n)}</code>" for n in nodes[:NAMES_SHOWN])
    if len(nodes) <= NAMES_SHOWN:
        return shown
    rest = ", ".join(f"<code>{html.escape(n)}</code>" for n in nodes[NAMES_SHOWN:])
    return (f'{shown}, <details class="more"><summary>+{len(nodes) - NAMES_SHOWN:,} more'
            f'</summary><div class="names">{rest}</div></details>')


def _group_html(g: Group) -> str:
    what = html.escape(_what(g))
    if g.anchor:
        what = f'<a href="#{g.anchor}">{what}</a>'
    label = "first message" if g.verdict == "fail" else "why"
    return (f'<div class="grp g-{g.verdict}"><span class="rt">{html.escape(g.runtime)}</span>'
            f'{what} <span class="n">{_on(g)}</span>: {_names_html(g.nodes)}'
            f'<div class="first" title="{html.escape(g.message[:2000])}">{label}: '
            f"{html.escape(short(g.message))}</div></div>")


def fleet_html(vs: list[Verdict]) -> str:
    """The grouped failing (then missing, skipped) cells, for under the verdict lines."""
    found = groups(vs)
    if not found:
        return ""
    fails = [g for g in found if g.verdict == "fail"]
    gaps = [g for g in found if g.verdict != "fail"]
    shown, hidden = fails[:GROUPS_SHOWN], fails[GROUPS_SHOWN:]
    out = ['<div class="groups">']
    if fails:
        nodes = len({n for g in fails for n in g.nodes})
        out.append(f"<h3>Failing nodes: {nodes:,}, in {len(fails):,} "
                   f"group{'s' * (len(fails) != 1)} of what failed</h3>")
    out += [_group_html(g) for g in shown]
    if hidden:
        out.append(f'<details class="groups-more"><summary>{len(hidden):,} more '
                   f"group{'s' * (len(hidden) != 1)} ({sum(len(g.nodes) for g in hidden):,} "
                   f"cells)</summary>{''.join(_group_html(g) for g in hidden)}</details>")
    out += [_group_html(g) for g in gaps]
    nodes = sorted({v.node for v in vs})
    if len(vs) > FLEET_CELLS:
        out.append(f'<p class="muted fleet-note">'
                   f"{html.escape(fleet_note(len(vs), len(nodes), len({v.runtime for v in vs})))}"
                   "</p>")
    return "".join(out) + "</div>"


# ---- Markdown ----

def _names_md(nodes: list[str]) -> str:
    shown = ", ".join(f"`{n}`" for n in nodes[:NAMES_SHOWN])
    more = len(nodes) - NAMES_SHOWN
    return shown + (f", … +{more:,} more" if more > 0 else "")


def fleet_markdown(vs: list[Verdict]) -> list[str]:
    found = groups(vs)
    if not found:
        return []
    out = []
    fails = [g for g in found if g.verdict == "fail"]
    if fails:
        nodes = len({n for g in fails for n in g.nodes})
        out += [f"**Failing nodes: {nodes:,}**, in {len(fails):,} "
                f"group{'s' * (len(fails) != 1)} of what failed:", ""]
    for g in found:
        icon = "❌" if g.verdict == "fail" else "∅" if g.verdict == "missing" else "⏭"
        label = "first message" if g.verdict == "fail" else "why"
        what = ", ".join(f"`{c}`" for c in g.checks[:CHECKS_SHOWN])
        if len(g.checks) > CHECKS_SHOWN:
            what = f"{len(g.checks)} checks ({what} and {len(g.checks) - CHECKS_SHOWN} more)"
        what = f"{what} failed" if g.checks else _what(g)
        message = short(g.message).replace("|", "\\|")
        out.append(f"- {icon} **{g.runtime}** {what} {_on(g)}: {_names_md(g.nodes)} "
                   f"({label}: {message})")
    out.append("")
    if len(vs) > FLEET_CELLS:
        nodes = len({v.node for v in vs})
        out += [f"_{len(vs):,} node × class cells ({nodes:,} nodes × "
                f"{len({v.runtime for v in vs})} classes). Above {FLEET_CELLS} cells this "
                "summary lists failures and skips per check and class, not per cell, and "
                "collapses the matrix; every check with its evidence is in results.json._", ""]
    return out
