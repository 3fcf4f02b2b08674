"""Catalog RuntimeClasses shared by runs on one cluster (certify shards): a run creates or
joins a class, listing itself in its users annotation; the last user deletes it; every
change is an update of the object as read, so concurrent runs lose no entry; a class that
carries no users annotation (the user's own) is used and never changed or deleted.

The logic runs against an API stand-in that keeps resourceVersions and refuses stale
updates as the API server does (409), with the races put in by hand; the last test runs
runs in threads against the API server of a real local cluster.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from sandcheck.catalog import Catalog
from sandcheck.clusters.kuberuntimeclasses import (
    CONFLICT_RETRIES,
    USERS_ANNOTATION,
    KubeRuntimeClasses,
    release_run,
    users_of,
    with_users,
)
from sandcheck.clusters.runtimeclass import MANAGED_LABEL
from sandcheck.errors import ComponentError, UserError

RUNSC = Catalog.load(None).select("runsc")[0]
CLASS = RUNSC.runtime_class


class FakeNodeApi:
    """RuntimeClasses by name, each with a resourceVersion bumped on every write.
    ``before_write`` runs once before the next write (another run's step, in between)."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.version = 0
        self.before_write: list[Callable[[], None]] = []
        self.writes = 0

    def _interleave(self) -> None:
        if self.before_write:
            self.before_write.pop(0)()

    def _store(self, body: dict[str, Any]) -> None:
        self.version += 1
        self.writes += 1
        meta = {**body["metadata"], "resourceVersion": str(self.version)}
        self.objects[meta["name"]] = {**body, "metadata": meta}

    def read_runtime_class(self, name, **_):
        if name not in self.objects:
            raise ApiException(status=404, reason="Not Found")
        return self.objects[name]

    def create_runtime_class(self, body, **_):
        self._interleave()
        if body["metadata"]["name"] in self.objects:
            raise ApiException(status=409, reason="AlreadyExists")
        self._store(body)

    def replace_runtime_class(self, name, body, **_):
        self._interleave()
        if name not in self.objects:
            raise ApiException(status=404, reason="Not Found")
        if body["metadata"].get("resourceVersion") != \
                self.objects[name]["metadata"]["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict")
        self._store(body)

    def delete_runtime_class(self, name, body=None, **_):
        self._interleave()
        if name not in self.objects:
            raise ApiException(status=404, reason="Not Found")
        wanted = body.preconditions.resource_version if body is not None else None
        if wanted is not None and wanted != self.objects[name]["metadata"]["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict")
        del self.objects[name]


class Identity:
    @staticmethod
    def sanitize_for_serialization(obj):
        return obj


class Run(KubeRuntimeClasses):
    """One run's RuntimeClass handling against the stand-in (or a real API)."""

    def __init__(self, run_id: str, api: FakeNodeApi | None = None):
        self.runtimes = [RUNSC]
        self.run_id = run_id
        self.created_runtime_classes = []
        self.api = api
        self.api_client = Identity()
        self.said: list[str] = []
        self.progress = self.said.append

    core = None

    @property
    def node_api(self):
        return self.api


def users(api: FakeNodeApi) -> list[str] | None:
    return users_of(api.objects[CLASS]) if CLASS in api.objects else None


def test_the_creator_and_a_joiner_share_and_the_last_one_deletes():
    api = FakeNodeApi()
    a, b = Run("run-a", api), Run("run-b", api)
    assert a.ensure_runtime_classes() == [f"RuntimeClass {CLASS} created (handler runsc)"]
    assert users(api) == ["run-a"]
    assert api.objects[CLASS]["metadata"]["labels"][MANAGED_LABEL] == "true"
    assert "shared with run(s) run-a" in b.ensure_runtime_classes()[0]
    assert users(api) == ["run-a", "run-b"]
    a.delete_runtime_classes()
    assert users(api) == ["run-b"]  # still in use by b
    b.delete_runtime_classes()
    assert CLASS not in api.objects
    assert a.shared_runtime_classes == () and b.shared_runtime_classes == ()


def test_a_class_without_the_annotation_is_the_users_own_and_is_never_touched():
    api = FakeNodeApi()
    # what `sandcheck runtimeclasses | kubectl apply -f -` makes: sandcheck's label, no users
    api._store({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "handler": "runsc",
                "metadata": {"name": CLASS, "labels": {MANAGED_LABEL: "true"}}})
    writes = api.writes
    run = Run("run-a", api)
    note = run.ensure_runtime_classes()[0]
    assert "not sandcheck's to delete" in note
    run.delete_runtime_classes()
    assert api.writes == writes and users(api) is None and CLASS in api.objects


def test_a_class_of_another_handler_is_refused():
    api = FakeNodeApi()
    api._store({"handler": "runc", "metadata": {"name": CLASS}})
    with pytest.raises(UserError, match="already exists with handler 'runc'"):
        Run("run-a", api).ensure_runtime_classes()
    # the user may test the cluster's class as it is: then nothing is joined or changed
    run = Run("run-b", api)
    run.ensure_runtime_classes(use_existing=True)
    assert run.shared_runtime_classes == () and users(api) is None


def test_use_existing_never_joins_a_shared_class():
    api = FakeNodeApi()
    Run("run-a", api).ensure_runtime_classes()
    run = Run("run-b", api)
    run.ensure_runtime_classes(use_existing=True)
    run.delete_runtime_classes()
    assert users(api) == ["run-a"]
    with pytest.raises(UserError, match="does not exist"):
        Run("run-c", FakeNodeApi()).ensure_runtime_classes(use_existing=True)


def test_two_runs_creating_at_once_end_as_creator_and_joiner():
    api = FakeNodeApi()
    a, b = Run("run-a", api), Run("run-b", api)
    # b read "absent"; a creates before b's create arrives: b's create is refused (409)
    api.before_write.append(lambda: a.ensure_runtime_classes())
    b.ensure_runtime_classes()
    assert users(api) == ["run-a", "run-b"]


def test_two_runs_joining_at_once_lose_no_entry():
    api = FakeNodeApi()
    Run("run-x", api).ensure_runtime_classes()
    a, b = Run("run-a", api), Run("run-b", api)
    # b read users [x]; a's join lands first; b's update of the stale object is refused,
    # b reads again and adds itself to [x, a]
    api.before_write.append(lambda: a.ensure_runtime_classes())
    b.ensure_runtime_classes()
    assert users(api) == ["run-a", "run-b", "run-x"]


def test_the_last_users_delete_loses_to_a_joiner_in_between():
    api = FakeNodeApi()
    a, b = Run("run-a", api), Run("run-b", api)
    a.ensure_runtime_classes()
    # a read users [a] and deletes "as read"; b joins in between: the delete's
    # precondition fails, a reads [a, b] and only removes itself
    api.before_write.append(lambda: b.ensure_runtime_classes())
    a.delete_runtime_classes()
    assert users(api) == ["run-b"]
    b.delete_runtime_classes()
    assert CLASS not in api.objects


def test_a_joiner_whose_class_was_deleted_in_between_creates_it_again():
    api = FakeNodeApi()
    a, b = Run("run-a", api), Run("run-b", api)
    a.ensure_runtime_classes()
    api.before_write.append(lambda: a.delete_runtime_classes())
    b.ensure_runtime_classes()  # its update finds the class gone (404): read, create
    assert users(api) == ["run-b"]


def test_a_run_that_keeps_losing_gives_up_naming_the_class():
    api = FakeNodeApi()
    Run("run-x", api).ensure_runtime_classes()
    other = Run("run-o", api)

    def churn():  # another run changes the class before every write of this one
        other.ensure_runtime_classes()
        other.delete_runtime_classes()
        api.before_write.append(churn)

    api.before_write.append(churn)
    with pytest.raises(ComponentError, match=f"RuntimeClass {CLASS}: {CONFLICT_RETRIES}"):
        Run("run-a", api).ensure_runtime_classes()


def test_a_failed_release_is_reported_and_the_teardown_goes_on():
    api = FakeNodeApi()
    run = Run("run-a", api)
    run.ensure_runtime_classes()

    def broken(name, **_):
        raise ApiException(status=503, reason="Service Unavailable")

    api.read_runtime_class = broken
    run.delete_runtime_classes()
    assert any("not released" in line and "run-a" in line for line in run.said)


def test_a_resumed_run_releases_what_its_killed_process_left():
    api = FakeNodeApi()
    old, new = Run("run-old", api), Run("run-new", api)
    old.ensure_runtime_classes()  # then killed: it never leaves
    new.ensure_runtime_classes()
    deleted = []
    new.core = SimpleNamespace(delete_namespace=lambda name, **_: deleted.append(name))
    notes = release_run(new, "run-old")
    assert users(api) == ["run-new"] and deleted == ["sandcheck-run-old"]
    assert notes == [f"RuntimeClass {CLASS} kept for run(s) run-new",
                     "namespace sandcheck-run-old deleted"]
    new.delete_runtime_classes()
    assert CLASS not in api.objects  # the last user, now that the dead one is gone


def test_users_annotation_helpers():
    obj = {"metadata": {"name": "x", "annotations": {"other": "1"}, "resourceVersion": "7"}}
    assert users_of(obj) is None
    shared = with_users(obj, ["b", "a", "b"])
    assert shared["metadata"]["annotations"] == {"other": "1", USERS_ANNOTATION: "a,b"}
    assert shared["metadata"]["resourceVersion"] == "7" and users_of(shared) == ["a", "b"]
    assert users_of(with_users(obj, [])) == []
    assert "annotations" in obj["metadata"] and USERS_ANNOTATION not in \
        obj["metadata"]["annotations"]  # pure: the input is unchanged


# -- a real API server ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def local_cluster():
    """A local cluster (runc only), started once for this module."""
    from sandcheck.clusters import registry
    from sandcheck.clusters.base import BackendSettings, new_run_id

    if os.geteuid() != 0:
        pytest.skip("the local backend needs root")
    why = registry.entry("local").unavailable()
    if why:
        pytest.skip(f"the local backend cannot run here: {why}")
    from sandcheck.fixtures.image import build_probe_image
    from sandcheck.provision.paths import cache_dir

    runc = Catalog.load(None).select("runc")
    backend = registry.open_backend("local", BackendSettings(
        runc, new_run_id(), image=build_probe_image(cache_dir() / "probe"),
        options={"containerd": None}))
    try:
        backend.start()
        yield backend
    finally:
        backend.stop()


@pytest.mark.integration
def test_runs_in_threads_share_one_class_on_a_real_api_server(local_cluster):
    """Eight runs join at once and leave at once through the real API server: every run
    is listed while it runs, the class is gone after the last, and a class of the user's
    is left untouched by all of them."""
    from sandcheck.clusters.kube import KubeCluster

    def run(run_id: str) -> KubeCluster:
        kube = KubeCluster([RUNSC], run_id)
        kube.kubeconfig_path = local_cluster.kubeconfig_path
        kube.connect()
        return kube

    own = {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "handler": "runc",
           "metadata": {"name": "users-own", "labels": {MANAGED_LABEL: "true"}}}
    local_cluster.node_api.create_runtime_class(own)
    runc = Catalog.load(None).select("runc")[0]
    owner = KubeCluster([dataclasses.replace(runc, runtime_class="users-own")], "owner")
    owner.kubeconfig_path = local_cluster.kubeconfig_path
    owner.connect()
    runs = [run(f"shard-{i}") for i in range(8)]
    errors: list[BaseException] = []

    def each(step: Callable[[KubeCluster], object]) -> None:
        def one(kube: KubeCluster) -> None:
            try:
                step(kube)
            except BaseException as exc:  # reported below
                errors.append(exc)
        threads = [threading.Thread(target=one, args=(k,)) for k in runs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors

    try:
        each(lambda kube: kube.ensure_runtime_classes())
        listed = users_of(runs[0].read_runtime_class(CLASS))
        assert listed == sorted(k.run_id for k in runs)
        each(lambda kube: kube.delete_runtime_classes())
        with pytest.raises(ApiException) as gone:
            runs[0].read_runtime_class(CLASS)
        assert gone.value.status == 404
        # a class the user made (sandcheck's label, no users annotation) stays as it was
        assert "not sandcheck's to delete" in owner.ensure_runtime_classes()[0]
        owner.delete_runtime_classes()
        assert users_of(owner.read_runtime_class("users-own")) is None
    finally:
        local_cluster.node_api.delete_runtime_class("users-own")
        for kube in [*runs, owner]:
            kube.api_client.close()
