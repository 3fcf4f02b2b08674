"""What containerd's own record of a pod says, read from CRI inspect output.

Pure functions of the dicts a backend's ``inspect_pod`` returns (``{"sandbox": crictl
inspectp, "container": crictl inspect}``): no calls, so the benchmarks and the suites read
timestamps, handlers and cgroups the same way whichever backend made the pod.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

SANDBOX_TO_CONTAINER = "cri_sandbox_to_container_seconds"
"""The key of the one start phase the runtime's own timestamps give."""

_RFC3339 = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$")


def timestamp_ns(value: Any) -> int | None:
    """Nanoseconds since the epoch from a CRI timestamp: an integer (or its decimal string)
    or RFC 3339 with up to nanosecond digits (crictl's JSON). None when absent or zero."""
    if isinstance(value, int):
        return value or None
    if not isinstance(value, str) or not value:
        return None
    if value.isdigit():
        return int(value) or None
    match = _RFC3339.match(value)
    if match is None:
        return None
    base, fraction, zone = match.groups()
    seconds = datetime.fromisoformat(base + ("+00:00" if zone == "Z" else zone)).timestamp()
    if seconds <= 0:
        return None  # Go's zero time: the event has not happened
    return int(seconds) * 1_000_000_000 + int((fraction or "0").ljust(9, "0"))


def _part(inspect: dict[str, Any], part: str) -> dict[str, Any]:
    """One document of the inspect data; {} when absent or not JSON (crictl's error text)."""
    doc = inspect.get(part) if isinstance(inspect, dict) else None
    return doc if isinstance(doc, dict) else {}


def startup_phases(inspect: dict[str, Any]) -> dict[str, float]:
    """Seconds from the sandbox's creation to its container's start, by the runtime's own
    clock (nanosecond CRI status), or {} when either time is missing or out of order."""
    created = timestamp_ns((_part(inspect, "sandbox").get("status") or {}).get("createdAt"))
    started = timestamp_ns((_part(inspect, "container").get("status") or {}).get("startedAt"))
    if created is None or started is None or started < created:
        return {}
    return {SANDBOX_TO_CONTAINER: (started - created) / 1e9}


def runtime_handler(inspect: dict[str, Any]) -> str | None:
    """The runtime handler containerd ran the sandbox with (CRI's own answer)."""
    handler = (_part(inspect, "sandbox").get("status") or {}).get("runtimeHandler")
    return handler if isinstance(handler, str) and handler else None


def cgroups_paths(inspect: dict[str, Any]) -> list[str]:
    """The cgroupsPath of the sandbox and of the container, in the cgroupfs form only
    (``/kubepods/...``; systemd's ``slice:prefix:name`` names no directory)."""
    paths = []
    for part in ("sandbox", "container"):
        spec = (_part(inspect, part).get("info") or {}).get("runtimeSpec")
        path = ((spec or {}).get("linux") or {}).get("cgroupsPath")
        if isinstance(path, str) and path.startswith("/"):
            paths.append(path)
    return paths
