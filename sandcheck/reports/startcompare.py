"""Does the headline start figure show the runtime? Its runsc-minus-runc difference next
to the same difference of the CRI-level start of the same pods, in the same run.

The Kubernetes path adds the same API, scheduler and kubelet work to every runtime, so a
runtime's extra start time over runc must survive into the headline figure
(``startup_total_seconds``: create call to Running seen on a watch, plus the first exec).
The CRI-level start is containerd's own: the sandbox's creation to the container's start
(``startup_cri_sandbox_to_container_seconds``). The headline difference counts as
following the runtime when it lies within 25 % of the CRI difference, or 50 ms when that
is larger (the acceptance rule of the start benchmark).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from sandcheck.reports.results import Results
from sandcheck.reports.spread import Spread, median_difference, median_ratio

HEADLINE = "startup_total_seconds"
CRI_START = "startup_cri_sandbox_to_container_seconds"
REFERENCE = "runc"
RELATIVE_TOLERANCE = 0.25
ABSOLUTE_TOLERANCE = 0.050


@dataclass(frozen=True)
class StartComparison:
    runtime: str
    headline_diff: Spread
    cri_diff: Spread
    headline_ratio: Spread
    cri_ratio: Spread

    @property
    def tolerance(self) -> float:
        return max(RELATIVE_TOLERANCE * abs(self.cri_diff.value), ABSOLUTE_TOLERANCE)

    @property
    def gap(self) -> float:
        """Headline difference minus CRI difference (seconds)."""
        return self.headline_diff.value - self.cri_diff.value

    @property
    def follows(self) -> bool | None:
        """Whether the headline difference is within tolerance of the CRI difference."""
        if not (math.isfinite(self.headline_diff.value) and math.isfinite(self.cri_diff.value)):
            return None
        return abs(self.gap) <= self.tolerance

    def sentence(self) -> str:
        """One line for evidence, progress and the Markdown summary."""
        if self.follows is None:
            return f"{self.runtime}: no CRI-level start to compare with"
        verdict = "follows the runtime" if self.follows else "does NOT follow the runtime"
        return (f"{self.runtime} − {REFERENCE}: headline start {_ms(self.headline_diff.value)}"
                f" ({_x(self.headline_ratio.value)}), CRI-level start "
                f"{_ms(self.cri_diff.value)} ({_x(self.cri_ratio.value)}); gap "
                f"{_ms(self.gap)}, tolerance ±{self.tolerance * 1000:.0f} ms: the headline "
                f"{verdict}")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:+.0f} ms" if math.isfinite(seconds) else "n/a"


def _x(value: float) -> str:
    return f"{value:.2f}×" if math.isfinite(value) else "n/a"


def compare_starts(results: Results) -> list[StartComparison]:
    """One comparison per runtime other than runc that has both figures (none without a
    runc reference)."""
    ref_head = results.metric(HEADLINE, REFERENCE)
    ref_cri = results.metric(CRI_START, REFERENCE)
    if ref_head is None or ref_cri is None or not ref_head.samples or not ref_cri.samples:
        return []
    out = []
    for runtime in results.runtimes():
        head, cri = results.metric(HEADLINE, runtime), results.metric(CRI_START, runtime)
        if runtime == REFERENCE or head is None or cri is None:
            continue
        if not head.samples or not cri.samples:
            continue
        out.append(StartComparison(
            runtime=runtime,
            headline_diff=median_difference(head.samples, ref_head.samples),
            cri_diff=median_difference(cri.samples, ref_cri.samples),
            headline_ratio=median_ratio(head.samples, ref_head.samples),
            cri_ratio=median_ratio(cri.samples, ref_cri.samples)))
    return out


def medians(results: Results, runtime: str) -> tuple[float | None, float | None]:
    """(headline median, CRI-level median) of one runtime, seconds."""
    found = []
    for name in (HEADLINE, CRI_START):
        metric = results.metric(name, runtime)
        found.append(statistics.median(metric.samples) if metric and metric.samples else None)
    return found[0], found[1]
