"""The RuntimeClass objects a Kubernetes backend makes and removes: one per selected
runtime (from the catalog, ``runtimeclass``), or the cluster's own when the user says to
test those, and the extra classes the RuntimeClass suite makes of its own.

Only classes made here are deleted at stop: a class that was on the cluster before stays.
"""

from __future__ import annotations

from typing import Any

from sandcheck.catalog import Runtime
from sandcheck.clusters.base import RUN_LABEL, unique_name
from sandcheck.clusters.kubeapi import KubeApi
from sandcheck.clusters.runtimeclass import MANAGED_LABEL, runtime_class
from sandcheck.errors import ComponentError, UserError
from sandcheck.timeouts import TIMEOUTS


class KubeRuntimeClasses(KubeApi):
    """RuntimeClasses of ``runtimes``; the names made are kept in
    ``created_runtime_classes``."""

    runtimes: list[Runtime]
    run_id: str
    created_runtime_classes: list[str]

    def ensure_runtime_classes(self, use_existing: bool = False) -> list[str]:
        """Create the RuntimeClass of each selected runtime (notes on what was found)."""
        from kubernetes.client.rest import ApiException

        notes = []
        for rt in self.runtimes:
            body = runtime_class(rt)
            name = body["metadata"]["name"]
            try:
                found = self.node_api.read_runtime_class(name, _request_timeout=TIMEOUTS.api_call)
            except ApiException as exc:
                if exc.status != 404:
                    raise ComponentError(f"reading RuntimeClass {name}: {exc.status} "
                                         f"{exc.reason}") from None
                found = None
            if found is not None:
                managed = (found.metadata.labels or {}).get(MANAGED_LABEL) == "true"
                if found.handler != rt.handler and not use_existing:
                    raise UserError(
                        f"RuntimeClass {name} already exists with handler {found.handler!r}, "
                        f"the catalog's {rt.name} needs {rt.handler!r}: delete it, or pass "
                        "--use-existing-runtimeclasses to test the cluster's class as it is")
                notes.append(f"RuntimeClass {name} exists (handler {found.handler}"
                             f"{', made by sandcheck' if managed else ''})")
                continue
            if use_existing:
                raise UserError(f"RuntimeClass {name} (for {rt.name}) does not exist on the "
                                "cluster: create it, or run without "
                                "--use-existing-runtimeclasses so sandcheck creates it")
            try:
                self.node_api.create_runtime_class(body, _request_timeout=TIMEOUTS.api_call)
            except ApiException as exc:
                raise ComponentError(f"creating RuntimeClass {name}: {exc.status} "
                                     f"{exc.reason}: {exc.body}") from None
            self.created_runtime_classes.append(name)
            notes.append(f"RuntimeClass {name} created (handler {rt.handler})")
        return notes

    def delete_runtime_classes(self) -> None:
        for name in self.created_runtime_classes:
            try:
                self.node_api.delete_runtime_class(name, _request_timeout=TIMEOUTS.api_call)
            except Exception:
                pass
        self.created_runtime_classes = []

    def create_runtime_class(self, handler: str, **extra: Any) -> str:
        """A RuntimeClass with a fresh name, labelled as sandcheck's; stop() deletes it."""
        name = unique_name("sandcheck-rc")
        body = {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
                "metadata": {"name": name, "labels": {MANAGED_LABEL: "true",
                                                      RUN_LABEL: self.run_id}},
                "handler": handler, **extra}
        self.node_api.create_runtime_class(body, _request_timeout=TIMEOUTS.api_call)
        self.created_runtime_classes.append(name)
        return name

    def read_runtime_class(self, name: str) -> dict[str, Any]:
        obj = self.node_api.read_runtime_class(name, _request_timeout=TIMEOUTS.api_call)
        return self.api_client.sanitize_for_serialization(obj)

    def delete_runtime_class(self, name: str) -> None:
        from kubernetes.client.rest import ApiException

        try:
            self.node_api.delete_runtime_class(name, _request_timeout=TIMEOUTS.api_call)
        except ApiException as exc:
            if exc.status != 404:
                raise ComponentError(f"deleting RuntimeClass {name}: {exc.status} "
                                     f"{exc.reason}") from None
        if name in self.created_runtime_classes:
            self.created_runtime_classes.remove(name)
