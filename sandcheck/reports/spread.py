"""How sure a comparison with runc is: bootstrap confidence intervals of the ratio and of
the difference of two medians, and the words for a difference inside the noise.

A benchmark of ten starts per runtime gives a median whose ratio to runc's can move by
tens of percent between runs on a busy machine; printing "0.985×" alone invites reading a
difference into noise. Each comparison here carries a 95 % interval from resampling both
sides (the samples are independent pods, not pairs); when the interval holds 1 (or 0
for a difference) the comparison says "within noise" instead of a bare ×. The resampling
is seeded: the same results.json renders the same report.
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass

RESAMPLES = 2000
LEVEL = 0.95
SEED = 11


def _clean(values: list[float]) -> list[float]:
    return [float(v) for v in values
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]


def _medians(values: list[float], rng: random.Random, count: int) -> list[float]:
    n = len(values)
    return [statistics.median(rng.choices(values, k=n)) for _ in range(count)]


def _interval(estimates: list[float]) -> tuple[float, float]:
    ordered = sorted(e for e in estimates if math.isfinite(e))
    if not ordered:
        return math.nan, math.nan
    tail = (1 - LEVEL) / 2
    low = ordered[int(tail * (len(ordered) - 1))]
    high = ordered[int(math.ceil((1 - tail) * (len(ordered) - 1)))]
    return low, high


@dataclass(frozen=True)
class Spread:
    """A median ratio (or difference) and its bootstrap interval."""

    value: float
    low: float
    high: float
    neutral: float
    """1 for a ratio, 0 for a difference: the interval holding it means no difference."""

    @property
    def known(self) -> bool:
        return all(math.isfinite(x) for x in (self.value, self.low, self.high))

    @property
    def within_noise(self) -> bool:
        return self.known and self.low <= self.neutral <= self.high


NOTHING = Spread(math.nan, math.nan, math.nan, 1.0)


def median_ratio(values: list[float], reference: list[float],
                 resamples: int = RESAMPLES) -> Spread:
    """median(values) / median(reference) with its bootstrap interval."""
    a, b = _clean(values), _clean(reference)
    if not a or not b or statistics.median(b) <= 0:
        return NOTHING
    rng = random.Random(SEED)
    ma, mb = _medians(a, rng, resamples), _medians(b, rng, resamples)
    ratios = [x / y if y > 0 else math.nan for x, y in zip(ma, mb, strict=True)]
    low, high = _interval(ratios)
    return Spread(statistics.median(a) / statistics.median(b), low, high, 1.0)


def median_difference(values: list[float], reference: list[float],
                      resamples: int = RESAMPLES) -> Spread:
    """median(values) - median(reference) with its bootstrap interval."""
    a, b = _clean(values), _clean(reference)
    if not a or not b:
        return Spread(math.nan, math.nan, math.nan, 0.0)
    rng = random.Random(SEED)
    ma, mb = _medians(a, rng, resamples), _medians(b, rng, resamples)
    low, high = _interval([x - y for x, y in zip(ma, mb, strict=True)])
    return Spread(statistics.median(a) - statistics.median(b), low, high, 0.0)


def _n(x: float) -> str:
    return f"{x:.2f}" if abs(x) < 10 else f"{x:.1f}"


def ratio_text(spread: Spread, reference: str = "runc") -> str:
    """'1.62× runc (95% CI 1.50–1.75)', or '≈ runc (0.93–1.08×, within noise)'."""
    if not spread.known:
        return f"{_n(spread.value)}× {reference}" if math.isfinite(spread.value) else "n/a"
    band = f"{_n(spread.low)}–{_n(spread.high)}"
    if spread.within_noise:
        return f"≈ {reference} ({band}×, within noise)"
    return f"{_n(spread.value)}× {reference} (95% CI {band})"


def difference_text(spread: Spread, unit: str, divisor: float) -> str:
    """'+152 ms (95% CI +120…+190)', or '+8 ms (−40…+55, within noise)'."""
    if not math.isfinite(spread.value):
        return "n/a"
    value = f"{spread.value / divisor:+.0f} {unit}"
    if not spread.known:
        return value
    band = f"{spread.low / divisor:+.0f}…{spread.high / divisor:+.0f}"
    if spread.within_noise:
        return f"{value} ({band}, within noise)"
    return f"{value} (95% CI {band})"
