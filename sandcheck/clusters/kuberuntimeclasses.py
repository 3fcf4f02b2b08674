"""The RuntimeClass objects a Kubernetes backend makes and removes: one per selected
runtime (from the catalog, ``runtimeclass``), or the cluster's own when the user says to
test those, and the extra classes the RuntimeClass suite makes of its own.

A catalog class is cluster-wide and named by the catalog (``gvisor``), so runs that share
a cluster (two ``certify`` shards of disjoint ``--nodes``) share it. A run that creates
one lists itself in the annotation ``sandcheck.dev/users``; a run that finds one with that
annotation adds itself and uses it. At stop each run removes itself, and the last one
deletes the class. Every change is an update of the object as read (its resourceVersion),
so two runs changing the list at once cannot lose each other's entry: the API refuses the
stale one (409) and that run reads again. A class without the annotation was not made by
a run for runs (the user's own, or applied from ``sandcheck runtimeclasses``): it is used
as it is, never changed and never deleted. The suite's own classes (fresh names) are
deleted by the run that made them.
"""

from __future__ import annotations

from typing import Any

from sandcheck.catalog import Runtime
from sandcheck.clusters.base import RUN_LABEL, unique_name
from sandcheck.clusters.kubeapi import KubeApi
from sandcheck.clusters.runtimeclass import MANAGED_LABEL, runtime_class
from sandcheck.errors import ComponentError, UserError
from sandcheck.progress import Progress
from sandcheck.timeouts import TIMEOUTS

USERS_ANNOTATION = "sandcheck.dev/users"
"""Run ids of the runs using a shared catalog class, comma-separated; its presence marks a
class a run made to share (the last user deletes it)."""
CONFLICT_RETRIES = 20
"""Updates refused as stale (409) in a row before a run gives up on a shared class: each
retry reads the object again, so only a storm of concurrent runs gets this far."""


def users_of(obj: dict[str, Any]) -> list[str] | None:
    """The runs listed on a class (pure); None for a class that is no shared one."""
    value = ((obj.get("metadata") or {}).get("annotations") or {}).get(USERS_ANNOTATION)
    if value is None:
        return None
    return [u for u in value.split(",") if u]


def with_users(obj: dict[str, Any], users: list[str]) -> dict[str, Any]:
    """``obj`` listing ``users`` (sorted, unique), its resourceVersion kept (pure)."""
    meta = dict(obj.get("metadata") or {})
    meta["annotations"] = {**(meta.get("annotations") or {}),
                           USERS_ANNOTATION: ",".join(sorted(set(users)))}
    return {**obj, "metadata": meta}


class KubeRuntimeClasses(KubeApi):
    """RuntimeClasses of ``runtimes``: the shared catalog classes this run uses are kept in
    ``shared_runtime_classes``, the classes it made for itself in
    ``created_runtime_classes``."""

    runtimes: list[Runtime]
    run_id: str
    created_runtime_classes: list[str]
    shared_runtime_classes: tuple[str, ...] = ()
    progress: Progress

    def ensure_runtime_classes(self, use_existing: bool = False) -> list[str]:
        """Create or join the RuntimeClass of each selected runtime (notes on what was
        found)."""
        return [self._ensure_class(rt, use_existing) for rt in self.runtimes]

    # -- the API calls, one place (tests replace node_api) -----------------------------------

    def _read_class(self, name: str) -> dict[str, Any] | None:
        from kubernetes.client.rest import ApiException

        try:
            obj = self.node_api.read_runtime_class(name, _request_timeout=TIMEOUTS.api_call)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise ComponentError(f"reading RuntimeClass {name}: {exc.status} "
                                 f"{exc.reason}") from None
        return self.api_client.sanitize_for_serialization(obj)

    def _write_class(self, name: str, body: dict[str, Any], create: bool) -> bool:
        """Create or update (as read); False when another run got there first (409, or
        the object went meanwhile): read again."""
        from kubernetes.client.rest import ApiException

        try:
            if create:
                self.node_api.create_runtime_class(body, _request_timeout=TIMEOUTS.api_call)
            else:
                self.node_api.replace_runtime_class(name, body,
                                                    _request_timeout=TIMEOUTS.api_call)
        except ApiException as exc:
            if exc.status in (404, 409):
                return False
            raise ComponentError(f"{'creating' if create else 'updating'} RuntimeClass "
                                 f"{name}: {exc.status} {exc.reason}: {exc.body}") from None
        return True

    def _delete_class_at(self, name: str, resource_version: str | None) -> bool:
        """Delete the class if it is still as read; False when it changed (409)."""
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        options = client.V1DeleteOptions(
            preconditions=client.V1Preconditions(resource_version=resource_version))
        try:
            self.node_api.delete_runtime_class(name, body=options,
                                               _request_timeout=TIMEOUTS.api_call)
        except ApiException as exc:
            if exc.status == 404:
                return True
            if exc.status == 409:
                return False
            raise ComponentError(f"deleting RuntimeClass {name}: {exc.status} "
                                 f"{exc.reason}") from None
        return True

    # -- joining and leaving a shared class ----------------------------------------------------

    def _ensure_class(self, rt: Runtime, use_existing: bool) -> str:
        body = runtime_class(rt)
        name = body["metadata"]["name"]
        for _ in range(CONFLICT_RETRIES):
            found = self._read_class(name)
            if found is None:
                if use_existing:
                    raise UserError(f"RuntimeClass {name} (for {rt.name}) does not exist on "
                                    "the cluster: create it, or run without "
                                    "--use-existing-runtimeclasses so sandcheck creates it")
                if self._write_class(name, with_users(body, [self.run_id]), create=True):
                    self._using(name)
                    return f"RuntimeClass {name} created (handler {rt.handler})"
                continue  # another run created it meanwhile: join that one
            if found.get("handler") != rt.handler and not use_existing:
                raise UserError(
                    f"RuntimeClass {name} already exists with handler {found.get('handler')!r}, "
                    f"the catalog's {rt.name} needs {rt.handler!r}: delete it, or pass "
                    "--use-existing-runtimeclasses to test the cluster's class as it is")
            users = users_of(found)
            managed = ((found.get("metadata") or {}).get("labels") or {}).get(
                MANAGED_LABEL) == "true"
            if use_existing or users is None:  # the user's own: used as it is
                return (f"RuntimeClass {name} exists (handler {found.get('handler')}"
                        f"{', made by sandcheck' if managed else ''}; not sandcheck's to "
                        "delete)")
            if self.run_id in users or self._write_class(
                    name, with_users(found, [*users, self.run_id]), create=False):
                self._using(name)
                others = [u for u in users if u != self.run_id]
                return (f"RuntimeClass {name} exists (handler {rt.handler}), shared with "
                        f"run(s) {', '.join(others) or 'none'}")
        raise ComponentError(f"RuntimeClass {name}: {CONFLICT_RETRIES} updates in a row were "
                             "refused as stale (other runs changing it at the same time)")

    def _using(self, name: str) -> None:
        if name not in self.shared_runtime_classes:
            self.shared_runtime_classes = (*self.shared_runtime_classes, name)

    def release_runtime_class(self, name: str, run_id: str | None = None) -> str:
        """Leave a shared class: remove this run (or ``run_id``, an earlier process of a
        resumed run) from its users, deleting it when no other run is left. Says what
        happened."""
        run_id = run_id or self.run_id
        for _ in range(CONFLICT_RETRIES):
            found = self._read_class(name)
            if found is None:
                return f"RuntimeClass {name} already gone"
            users = users_of(found)
            if users is None or run_id not in users:
                return f"RuntimeClass {name} does not list run {run_id}: left as it is"
            rest = [u for u in users if u != run_id]
            if rest:
                if self._write_class(name, with_users(found, rest), create=False):
                    return f"RuntimeClass {name} kept for run(s) {', '.join(rest)}"
            elif self._delete_class_at(name, (found.get("metadata") or {}).get(
                    "resourceVersion")):
                return f"RuntimeClass {name} deleted (its last user)"
        raise ComponentError(f"RuntimeClass {name}: {CONFLICT_RETRIES} updates in a row were "
                             f"refused as stale; run {run_id} is still listed as a user")

    def delete_runtime_classes(self) -> None:
        """At stop: delete the classes this run made, leave the shared ones (best effort:
        a failure is reported, never raised, so the rest of the teardown runs)."""
        for name in self.created_runtime_classes:
            try:
                self.node_api.delete_runtime_class(name, _request_timeout=TIMEOUTS.api_call)
            except Exception:
                pass
        self.created_runtime_classes = []
        for name in self.shared_runtime_classes:
            try:
                self.release_runtime_class(name)
            except Exception as exc:  # the API is gone or refuses: say so, go on
                self.progress(f"RuntimeClass {name}: not released ({exc}); its "
                              f"{USERS_ANNOTATION} annotation still lists run {self.run_id}")
        self.shared_runtime_classes = ()

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


def release_run(kube: KubeRuntimeClasses, run_id: str) -> list[str]:
    """What an earlier process of a resumed run left on the cluster when it was killed:
    its namespace (deleted, with its pods; not waited for) and its entries in the shared
    classes of ``kube``'s runtimes. Notes on what was done."""
    from kubernetes.client.rest import ApiException

    from sandcheck.clusters.kubenamespace import namespace_for

    notes = [kube.release_runtime_class(rt.runtime_class, run_id) for rt in kube.runtimes]
    namespace = namespace_for(run_id)
    try:
        kube.core.delete_namespace(namespace, _request_timeout=TIMEOUTS.api_call)
        notes.append(f"namespace {namespace} deleted")
    except ApiException as exc:
        if exc.status != 404:
            notes.append(f"namespace {namespace} not deleted: {exc.status} {exc.reason}")
    return notes


def cluster_uid(kube: KubeApi) -> str | None:
    """The cluster's identity: the uid of its kube-system namespace, the same for every
    run against it (certify shards record it; merging their bundles compares it). None
    when the API does not tell."""
    try:
        return kube.core.read_namespace("kube-system",
                                        _request_timeout=TIMEOUTS.api_call).metadata.uid
    except Exception:  # a cluster without kube-system, no permission: no identity
        return None
