"""RuntimeClass objects (node.k8s.io/v1) made from catalog entries."""

from __future__ import annotations

from typing import Any

import yaml

from sandcheck.catalog import Runtime

MANAGED_LABEL = "sandcheck.dev/managed"


def runtime_class(rt: Runtime, name: str | None = None,
                  handler: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "node.k8s.io/v1",
        "kind": "RuntimeClass",
        "metadata": {"name": name or rt.runtime_class, "labels": {MANAGED_LABEL: "true"}},
        "handler": handler or rt.handler,
    }
    if rt.overhead:
        body["overhead"] = {"podFixed": dict(rt.overhead)}
    if rt.scheduling:
        body["scheduling"] = dict(rt.scheduling)
    return body


def manifests(runtimes: list[Runtime]) -> str:
    return yaml.safe_dump_all([runtime_class(rt) for rt in runtimes], sort_keys=False)
