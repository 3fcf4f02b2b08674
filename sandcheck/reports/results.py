"""The result model of one run: environment, checks with evidence, metrics with samples.

``results.json`` is the contract between a run and everything after it (HTML, Markdown,
baseline comparison), so it is versioned and written in one place.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
SERIES_LABELS = ("step",)
"""Labels that tell apart metrics of one name and runtime (a benchmark's steps of pods per
node): part of a metric's key, so lookups, ratios and the baseline keep each step apart."""
STATUSES = ("passed", "failed", "skipped", "error", "deviation")
"""``deviation``: an upstream spec the runtime declares (with a source) it does not meet."""


@dataclass
class Check:
    id: str
    runtime: str | None
    status: str
    evidence: list[dict[str, Any]] = field(default_factory=list)
    message: str = ""
    nodeid: str = ""
    duration_seconds: float = 0.0
    node: str | None = None
    """The node the check's pods were pinned to (``--nodes``); None: the scheduler chose.
    A field with a default, so results.json files written before it still read."""


def percentile(sorted_samples: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not sorted_samples:
        return math.nan
    pos = (len(sorted_samples) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_samples[lo] + (sorted_samples[hi] - sorted_samples[lo]) * (pos - lo)


def summarize(samples: list[float]) -> dict[str, float]:
    """Over finite samples only: a NaN from one broken measurement must not poison the rest."""
    s = sorted(x for x in samples if math.isfinite(x))
    if not s:
        return {"count": 0}
    return {
        "count": len(s),
        "min": s[0],
        "p05": percentile(s, 0.05),
        "p50": percentile(s, 0.50),
        "p95": percentile(s, 0.95),
        "p99": percentile(s, 0.99),
        "max": s[-1],
        "mean": statistics.fmean(s),
        "stdev": statistics.stdev(s) if len(s) > 1 else 0.0,
    }


@dataclass
class Metric:
    name: str
    """Carries its unit as a suffix: startup_total_seconds, pss_per_pod_bytes."""
    runtime: str
    unit: str
    samples: list[float]
    failures: int = 0
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def summary(self) -> dict[str, float]:
        return summarize(self.samples)

    def key(self) -> tuple[str, str]:
        """(name, runtime); a series label joins the name: ``density_start_seconds[step=30]``."""
        series = ",".join(f"{k}={self.labels[k]}" for k in SERIES_LABELS if k in self.labels)
        return (f"{self.name}[{series}]" if series else self.name, self.runtime)


@dataclass
class Results:
    environment: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    metrics: list[Metric] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "environment": self.environment,
            "checks": [dict(vars(c)) for c in self.checks],  # asdict's deep copy: 10× slower
            "metrics": [{**asdict(m), "summary": m.summary} for m in self.metrics],
        }

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False, default=str))
        tmp.replace(path)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Results:
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(f"results schema_version {version!r} is not {SCHEMA_VERSION}")
        return cls(
            environment=data.get("environment", {}),
            checks=[Check(**c) for c in data.get("checks", [])],
            metrics=[Metric(**{k: v for k, v in m.items() if k != "summary"})
                     for m in data.get("metrics", [])],
        )

    @classmethod
    def read(cls, path: Path) -> Results:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def merge(self, other: Results) -> None:
        for key, value in other.environment.items():
            self.environment.setdefault(key, value)
        self.checks.extend(other.checks)
        self.metrics.extend(other.metrics)

    def metric(self, name: str, runtime: str) -> Metric | None:
        return next((m for m in self.metrics if m.key() == (name, runtime)), None)

    def runtimes(self) -> list[str]:
        seen: dict[str, None] = {}
        for item in [*self.checks, *self.metrics]:
            if item.runtime:
                seen.setdefault(item.runtime, None)
        return list(seen)
