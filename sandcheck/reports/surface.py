"""The host syscall surface per runtime: reachable (the executors' seccomp filters) and
exercised (traced during the fixed workload) counts, each as a ratio to runc, and the
syscalls that differ from runc's, read from the evidence of the security suite's checks.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

from sandcheck.reports.results import Results

REFERENCE = "runc"
MEASURES = ("reachable", "exercised")
SHOWN = 60
"""Names listed per difference before "+N more"."""


@dataclass
class Row:
    runtime: str
    sets: dict[str, frozenset[str]] = field(default_factory=dict)


def surface_rows(results: Results) -> list[Row]:
    """One row per runtime that has a reachable or exercised set in its evidence (the first
    node's, when checks ran per node)."""
    rows: dict[str, Row] = {}
    for check in results.checks:
        for item in check.evidence or []:
            for measure in MEASURES:
                names = item.get(measure) if isinstance(item, dict) else None
                if check.runtime and isinstance(names, list):
                    row = rows.setdefault(check.runtime, Row(check.runtime))
                    row.sets.setdefault(measure, frozenset(names))
    order = sorted(rows, key=lambda r: (r != REFERENCE, r))
    return [rows[r] for r in order]


def _ratio(row: Row, ref: Row | None, measure: str) -> str:
    if ref is None or row is ref or measure not in row.sets or not ref.sets.get(measure):
        return ""
    return f"{len(row.sets[measure]) / len(ref.sets[measure]):.2f}×"


def _names(names: list[str]) -> str:
    more = f" +{len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more


def differences(row: Row, ref: Row | None) -> list[tuple[str, str, list[str]]]:
    """(measure, "only here" / "only in runc", names) for each non-empty difference."""
    if ref is None or row is ref:
        return []
    found = []
    for measure in MEASURES:
        mine, theirs = row.sets.get(measure), ref.sets.get(measure)
        if mine is None or theirs is None:
            continue
        for label, names in ((f"only {row.runtime}", mine - theirs),
                             (f"only {REFERENCE}", theirs - mine)):
            if names:
                found.append((measure, label, sorted(names)))
    return found


def _count(row: Row, measure: str) -> str:
    return str(len(row.sets[measure])) if measure in row.sets else "·"


def surface_html(results: Results) -> str:
    rows = surface_rows(results)
    if not rows:
        return ""
    ref = next((r for r in rows if r.runtime == REFERENCE), None)
    body = "".join(
        f"<tr><td>{html.escape(r.runtime)}</td>"
        + "".join(f"<td>{_count(r, m)}</td><td>{_ratio(r, ref, m)}</td>" for m in MEASURES)
        + "</tr>" for r in rows)
    diffs = "".join(
        f"<tr><td>{html.escape(r.runtime)}</td><td>{m}</td><td>{html.escape(label)}</td>"
        f"<td>{html.escape(_names(names))}</td></tr>"
        for r in rows for m, label, names in differences(r, ref))
    return ("<h2>Host syscall surface</h2><p class=sub>host syscalls the processes that "
            "execute a pod's workload may make (their seccomp filters, every syscall "
            "number) and made during the fixed workload (kernel tracepoint)</p>"
            "<table><tr><th>runtime</th><th>reachable</th><th>× runc</th>"
            f"<th>exercised</th><th>× runc</th></tr>{body}</table>"
            + (f"<details><summary>syscalls that differ from runc's</summary><table>"
               f"<tr><th>runtime</th><th>measure</th><th></th><th>syscalls</th></tr>{diffs}"
               "</table></details>" if diffs else ""))


def surface_markdown(results: Results) -> list[str]:
    rows = surface_rows(results)
    if not rows:
        return []
    ref = next((r for r in rows if r.runtime == REFERENCE), None)
    lines = ["## Host syscall surface", "",
             "| runtime | reachable | × runc | exercised | × runc |",
             "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r.runtime} | " + " | ".join(f"{_count(r, m)} | {_ratio(r, ref, m)}"
                                               for m in MEASURES) + " |" for r in rows]
    diffs = [f"- {r.runtime}, {m}, {label}: {_names(names)}"
             for r in rows for m, label, names in differences(r, ref)]
    return lines + ([""] + diffs if diffs else []) + [""]
