"""The one progress channel: a callable that takes one line.

Everything that reports progress (provisioning, backend bring-up, benchmarks) is handed
such a callable; the pytest plugin passes one that writes past output capture, the CLI
one that writes to stderr. No module prints progress on its own.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

Progress = Callable[[str], None]


def to_stderr(prefix: str = "sandcheck") -> Progress:
    def say(line: str) -> None:
        print(f"{prefix}: {line}", file=sys.stderr, flush=True)

    return say


def quiet(line: str) -> None:
    """A progress sink that drops every line (for callers that want none)."""
