"""Which runtime to pick: every runtime of the run side by side, its isolation (the kernel
between its workload and the host, its isolation and security checks, the host syscalls
its pods reach) against its cost (start and memory per pod, each with its ratio to runc
and that ratio's spread), and one line a reader can act on.

The facts come from results.json alone: the catalog profiles and the runtimes a backend
could not run are in its environment (``runtime_profiles``, ``runtimes_not_runnable``),
the rest are the run's checks and metrics. A runtime that could not run is still a row,
saying why, so a comparison of five runtimes shows five.
"""

from __future__ import annotations

import html
import statistics
from dataclasses import dataclass

from sandcheck.reports.results import Results
from sandcheck.reports.spread import median_ratio
from sandcheck.reports.verdict import (
    BAD,
    ISOLATION_SUITES,
    REFERENCE,
    RuntimeVerdict,
    cost_text,
    runtime_verdicts,
)

REACHABLE = "host_syscalls_reachable_count"
KERNEL_WORDS = {"own": "its own", "node": "the node's"}


@dataclass(frozen=True)
class Choice:
    """One runtime's row."""

    runtime: str
    kernel: str
    isolation: str
    reachable: str
    start: str
    memory: str
    pick: str
    runnable: bool


def _isolation(v: RuntimeVerdict) -> tuple[str, int]:
    """"N/M passed" (with the declared deviations and the skipped, or "K of M failed") of
    the isolation and security checks, and how many failed."""
    checks = [c for c in v.checks if c.id.startswith(ISOLATION_SUITES)]
    failed = sum(c.status in BAD for c in checks)
    if not checks:
        return "not run", 0
    if failed:
        return f"{failed} of {len(checks)} failed", failed
    passed = sum(c.status == "passed" for c in checks)
    deviations = len(v.isolation_deviations)
    skipped = len(checks) - passed - deviations
    return ", ".join([f"{passed}/{len(checks)} passed",
                      *([f"{deviations} declared deviation{'s' * (deviations != 1)}"]
                        if deviations else []),
                      *([f"{skipped} skipped"] if skipped else [])]), 0


def _reachable(results: Results, runtime: str) -> str:
    """The median count of reachable host syscalls, with its ratio to runc's."""
    metric = results.metric(REACHABLE, runtime)
    if metric is None or not metric.samples:
        return ""
    ref = results.metric(REACHABLE, REFERENCE)
    value = f"{statistics.median(metric.samples):.0f}"
    if runtime == REFERENCE or ref is None or not ref.samples:
        return value
    return f"{value} ({median_ratio(metric.samples, ref.samples).value:.2f}×)"


def _advice(v: RuntimeVerdict, kernel: str | None, failed: int) -> str:
    """What to pick the runtime for, from its isolation and its start against runc's."""
    if v.not_runnable is not None:
        return f"not here: {v.not_runnable}"
    if failed:
        return (f"nothing until its {failed} failing isolation "
                f"{'check passes' if failed == 1 else 'checks pass'}")
    if kernel == "own":
        advice = ("untrusted or multi-tenant code: a kernel of its own between the workload "
                  "and the host")
    elif kernel == "node":
        advice = "trusted code: the node's kernel" + _start_words(v)
    else:
        return "no catalog profile: measured, not judged"
    if v.isolation_deviations:
        names = ", ".join(c.id.split(".", 1)[1] for c in v.isolation_deviations)
        advice += f"; weaker than its class where it deviates ({names})"
    return advice


def _start_words(v: RuntimeVerdict) -> str:
    ratio = v.startup.ratio
    if v.runtime == REFERENCE or not ratio.known:
        return ""
    if ratio.within_noise:
        return ", starting as fast as runc"
    if ratio.high < 1:
        return ", starting faster than runc (when start time counts)"
    return f", starting in {ratio.value:.2f}× runc's time"


def choices(results: Results) -> list[Choice]:
    """One row per runtime of the run (runc first), and per runtime the backend left out."""
    env = results.environment
    profiles = env.get("runtime_profiles") or {}
    verdicts = runtime_verdicts(results)
    rows = []
    for v in verdicts:
        kernel = (profiles.get(v.runtime) or {}).get("kernel")
        isolation, failed = _isolation(v)
        why_not = v.not_runnable
        rows.append(Choice(
            runtime=v.runtime, kernel=KERNEL_WORDS.get(kernel or "", "unknown"),
            isolation=isolation if why_not is None else "not run",
            reachable=_reachable(results, v.runtime),
            start=cost_text(v.startup, v.runtime, "s"),
            memory=cost_text(v.memory, v.runtime, "MiB"),
            pick=_advice(v, kernel, failed), runnable=why_not is None))
    return rows


COLUMNS = ("runtime", "kernel between workload and host", "isolation and security checks",
           "host syscalls reachable (vs runc)", "start p50 (vs runc, 95% CI)",
           "memory per pod, PSS p50 (vs runc, 95% CI)", "pick it for")


def _cells(c: Choice) -> list[str]:
    return [c.runtime, c.kernel, c.isolation, c.reachable or "·", c.start or "·",
            c.memory or "·", c.pick]


def pick_html(results: Results) -> str:
    rows = choices(results)
    if len(rows) < 2:
        return ""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = "".join(
        f'<tr class="{"" if c.runnable else "muted"}">'
        + "".join(f"<td>{html.escape(x)}</td>" for x in _cells(c)) + "</tr>" for c in rows)
    return ('<section id="pick"><h2>Which to pick</h2><p class="muted">Isolation against '
            "cost, every runtime of this run side by side; ratios are to runc in the same "
            "run, with their 95 % bootstrap interval.</p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></section>")


def pick_markdown(results: Results) -> list[str]:
    rows = choices(results)
    if len(rows) < 2:
        return []
    out = ["## Which to pick", "", "| " + " | ".join(COLUMNS) + " |",
           "|" + "---|" * len(COLUMNS)]
    out += ["| " + " | ".join(x.replace("|", "\\|") for x in _cells(c)) + " |" for c in rows]
    return [*out, "", "Ratios are to runc in the same run, with their 95 % bootstrap "
            "interval; \"within noise\" when it holds 1.", ""]
