"""Whether a resource grew with the number of pods a soak cycled: a trend fitted on every
sample, never one reading against another.

A leak adds a little per pod, so it shows as a value that rises with the pod count; a
daemon's heap that settles after its first pods, a transient mount seen once, or noise
does not. So each resource is judged on the samples after a warm-up by two robust
statistics of the whole series: the Theil-Sen slope (the median of the slopes between
every pair of samples: one odd reading cannot move it) times the pods between the first
and last judged sample is the growth the fit predicts, and Kendall's tau (concordant
minus discordant pairs, over all pairs) says whether the rise is a steady one. A resource
grew when the predicted growth reaches its tolerance and tau says the series rises: two
for a count (a leak keeps adding; a daemon that keeps one more connection after its first
pods adds one, once), a quarter of a pool's size (a Go daemon's threads: it keeps the
threads its busiest moment needed), a share of the value with a floor for bytes (a heap
breathes).

Pure: numbers in, a ``Trend`` out.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from sandcheck.host.footprint import is_count, is_pool
from sandcheck.host.memory import MIB

WARMUP_SAMPLES = 2
"""Samples after the baseline left out of the fit: the first rounds fill caches (a
daemon's heap, containerd's metadata), which is growth that stops."""
MIN_SAMPLES = 5
"""Judged samples a fit needs to tell a trend from noise."""
TAU_RISING = 0.5
"""Kendall's tau from which a series counts as rising."""
COUNT_TOLERANCE = 2.0
"""A count grew when the fit predicts at least two more over the judged pods."""
POOL_SHARE = 0.25
"""A pool (threads) grew when the fit predicts at least this share of its median more
(and at least COUNT_TOLERANCE)."""
BYTES_SHARE = 0.05
BYTES_FLOOR = 4 * MIB
"""Bytes grew when the fit predicts at least this share of the median, and at least this
floor (a Go daemon's RSS moves by a few MiB with its garbage collector)."""


@dataclass(frozen=True)
class Trend:
    """One resource's fit over a soak."""

    resource: str
    pods: list[int]
    values: list[float]
    """Every sample, the baseline and warm-up too (they are plotted, not judged)."""
    judged_from: int
    """Index of the first judged sample."""
    slope: float | None
    """Theil-Sen slope per pod over the judged samples (None: too few)."""
    tau: float | None
    tolerance: float

    @property
    def judged(self) -> bool:
        return self.slope is not None

    @property
    def growth(self) -> float | None:
        """What the fit predicts the resource gained between the first and last judged
        sample."""
        if self.slope is None:
            return None
        pods = self.pods[self.judged_from:]
        return self.slope * (pods[-1] - pods[0])

    @property
    def grew(self) -> bool:
        growth = self.growth
        return (growth is not None and self.tau is not None and growth >= self.tolerance
                and self.tau >= TAU_RISING)

    def sentence(self, unit: str = "") -> str:
        """The trend in words, for a failure message and the report."""
        if not self.judged:
            return (f"{self.resource}: {len(self.values) - self.judged_from} samples after "
                    f"the warm-up, too few to fit (at least {MIN_SAMPLES})")
        first, last = self.values[self.judged_from], self.values[-1]
        pods = self.pods[self.judged_from:]
        return (f"{self.resource}: {_shown(first, unit)} at {pods[0]} pods, "
                f"{_shown(last, unit)} at {pods[-1]}; fit {_shown(self.growth, unit, True)} "
                f"over {pods[-1] - pods[0]} pods (Theil-Sen), Kendall tau {self.tau:.2f}")


def _shown(value: float | None, unit: str, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    sign = "+" if signed else ""
    if unit == "bytes":
        return f"{value / MIB:{sign}.1f} MiB"
    return f"{value:{sign}.1f}" if signed else f"{value:g}"


def theil_sen(xs: list[float], ys: list[float]) -> float | None:
    """The median of the slopes between every two points with distinct x."""
    slopes = [(ys[j] - ys[i]) / (xs[j] - xs[i])
              for i in range(len(xs)) for j in range(i + 1, len(xs)) if xs[j] != xs[i]]
    return statistics.median(slopes) if slopes else None


def kendall_tau(xs: list[float], ys: list[float]) -> float | None:
    """(concordant - discordant) / all pairs: 1 for a series that only rises, 0 for one
    with no order, and ties (a flat series) count as neither."""
    n = len(xs)
    pairs = n * (n - 1) // 2
    if not pairs:
        return None
    score = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = xs[j] - xs[i], ys[j] - ys[i]
            score += (dx * dy > 0) - (dx * dy < 0)
    return score / pairs


def tolerance_for(values: list[float], count: bool, pool: bool = False) -> float:
    middle = statistics.median(values) if values else 0.0
    if pool:
        return max(POOL_SHARE * middle, COUNT_TOLERANCE)
    if count:
        return COUNT_TOLERANCE
    return max(BYTES_SHARE * middle, BYTES_FLOOR)


def fit(resource: str, pods: list[int], values: list[float], count: bool,
        warmup: int = WARMUP_SAMPLES, pool: bool = False) -> Trend:
    """The trend of ``values`` (read after ``pods`` pods had been cycled) from sample
    ``1 + warmup`` on (the first sample is the baseline before any pod)."""
    start = min(1 + warmup, len(values))
    xs, ys = [float(p) for p in pods[start:]], values[start:]
    tolerance = tolerance_for(ys, count, pool)
    if len(xs) < MIN_SAMPLES:
        return Trend(resource, list(pods), list(values), start, None, None, tolerance)
    return Trend(resource, list(pods), list(values), start, theil_sen(xs, ys),
                 kendall_tau(xs, ys), tolerance)


def trends(pods: list[int], series: dict[str, list[float]]) -> list[Trend]:
    """The fit of every resource a soak counted (``read``'s keys: counts, pools, bytes)."""
    return [fit(name, pods, values, is_count(name), pool=is_pool(name))
            for name, values in series.items()]
