"""RuntimeClass: the Kubernetes side of the promise. A pod that names a class runs on its
handler, `kubectl describe` says so, and the cluster treats a missing class, a missing
handler, scheduling, overhead and deletion the way the API documents."""

from __future__ import annotations

import json
import platform
import time
import uuid
from pathlib import Path

import pytest

from sandcheck.clusters.backends.base import PodSpec
from sandcheck.clusters.backends.kube import pod_manifest
from sandcheck.clusters.catalog import Catalog
from sandcheck.clusters.errors import ComponentError
from sandcheck.clusters.runtimeclass import MANAGED_LABEL
from sandcheck.fixtures.pods import run_probe

RUNC = Catalog.load().get("runc")
EVENT_WAIT_SECONDS = 90.0


@pytest.fixture
def make_runtime_class(kube, request):
    """Create a RuntimeClass for one test; delete it when the test ends."""
    made: list[str] = []

    def make(handler: str, **extra) -> str:
        name = f"sandcheck-{uuid.uuid4().hex[:8]}"
        body = {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
                "metadata": {"name": name, "labels": {MANAGED_LABEL: "true"}},
                "handler": handler, **extra}
        kube.node_api.create_runtime_class(body)
        made.append(name)
        return name

    def cleanup() -> None:
        for name in made:
            try:
                kube.node_api.delete_runtime_class(name)
            except Exception:  # already deleted by the test
                pass

    request.addfinalizer(cleanup)
    return make


def _submit(kube, spec: PodSpec, request) -> tuple[str, str]:
    """Create a pod without waiting for it (for pods that must not run)."""
    ns = kube.ensure_namespace()
    name = f"{spec.name_prefix}-{uuid.uuid4().hex[:6]}"
    kube.core.create_namespaced_pod(ns, pod_manifest(spec, name, ns, kube.run_id))
    request.addfinalizer(lambda: kube.core.delete_namespaced_pod(name, ns,
                                                                 grace_period_seconds=0))
    return name, ns


def _wait_for_event(kube, name: str, ns: str, reason: str) -> list:
    deadline = time.monotonic() + EVENT_WAIT_SECONDS
    while time.monotonic() < deadline:
        events = [e for e in kube.core.list_namespaced_event(
            ns, field_selector=f"involvedObject.name={name}").items if e.reason == reason]
        if events:
            return events
        time.sleep(0.5)
    return []


def test_pod_runs_on_its_handler(kube, runtime, pod_factory, evidence):
    pod = pod_factory(PodSpec(runtime=runtime, name_prefix=f"rc-{runtime.name}"))
    data = pod.read()
    evidence.add("pod.spec.runtimeClassName", data["spec"].get("runtimeClassName"))
    assert data["spec"]["runtimeClassName"] == runtime.runtime_class
    probe = run_probe(pod)
    release = probe.data["uname"]["release"]
    evidence.add(**probe.evidence("uname"))
    if runtime.isolation.own_kernel:
        assert release != platform.release(), f"{runtime.name} pod runs on the node's kernel"
    elif runtime.isolation.own_kernel is False:
        assert release == platform.release()
    handler = kube.sandbox_handler(pod) if hasattr(kube, "sandbox_handler") else None
    if handler is not None:
        evidence.add("CRI sandbox runtime handler", handler)
        assert handler == runtime.handler


def test_describe_shows_runtime_class(kube, runtime, pod_factory, evidence):
    pod = pod_factory(PodSpec(runtime=runtime, name_prefix=f"desc-{runtime.name}"))
    text = pod.describe()
    evidence.add("kubectl describe pod", text)
    line = next((ln for ln in text.splitlines() if ln.startswith("Runtime Class Name:")), None)
    assert line is not None, "kubectl describe shows no Runtime Class Name"
    assert line.split(":", 1)[1].strip() == runtime.runtime_class


def test_missing_runtime_class_is_rejected_at_admission(kube, request, evidence):
    from kubernetes.client.rest import ApiException

    spec = PodSpec(runtime=RUNC, name_prefix="norc", runtime_class_name="sandcheck-absent")
    with pytest.raises(ApiException) as err:
        _submit(kube, spec, request)
    message = json.loads(err.value.body).get("message", "")
    evidence.add("API answer", {"status": err.value.status, "message": message})
    assert err.value.status == 403
    assert 'RuntimeClass "sandcheck-absent" not found' in message


def test_unknown_handler_leaves_pod_pending(kube, make_runtime_class, request, evidence):
    name_rc = make_runtime_class("sandcheck-no-such-handler")
    spec = PodSpec(runtime=RUNC, name_prefix="nohandler", runtime_class_name=name_rc)
    name, ns = _submit(kube, spec, request)
    events = _wait_for_event(kube, name, ns, "FailedCreatePodSandBox")
    pod = kube.read_pod(name, ns)
    evidence.add("events", [e.message for e in events])
    evidence.add("pod phase", pod["status"].get("phase"))
    assert events, f"no FailedCreatePodSandBox event within {EVENT_WAIT_SECONDS:.0f}s"
    assert any("sandcheck-no-such-handler" in (e.message or "") for e in events)
    assert pod["status"].get("phase") == "Pending"


def test_scheduling_is_merged_and_conflicts_rejected(kube, make_runtime_class, request,
                                                    evidence):
    from kubernetes.client.rest import ApiException

    toleration = {"key": "sandcheck.dev/sandbox", "operator": "Exists", "effect": "NoSchedule"}
    name_rc = make_runtime_class(RUNC.handler, scheduling={
        "nodeSelector": {"sandcheck.dev/rc": "yes"}, "tolerations": [toleration]})
    spec = PodSpec(runtime=RUNC, name_prefix="sched", runtime_class_name=name_rc)
    name, ns = _submit(kube, spec, request)
    pod = kube.read_pod(name, ns)["spec"]
    evidence.add("admitted pod spec", {k: pod.get(k) for k in ("nodeSelector", "tolerations")})
    assert pod["nodeSelector"] == {"sandcheck.dev/rc": "yes"}
    assert toleration in pod["tolerations"]
    conflicting = PodSpec(runtime=RUNC, name_prefix="conflict", runtime_class_name=name_rc,
                          node_selector={"sandcheck.dev/rc": "no"})
    with pytest.raises(ApiException) as err:
        _submit(kube, conflicting, request)
    evidence.add("API answer to a conflicting nodeSelector", err.value.body)
    assert err.value.status in (400, 403, 422)
    assert "conflict" in err.value.body.lower()


def _pod_cgroup(uid: str) -> Path | None:
    for path in Path("/sys/fs/cgroup/memory").rglob(f"pod{uid}"):
        return path
    for path in Path("/sys/fs/cgroup/memory").rglob(f"pod{uid.replace('-', '_')}*"):
        return path
    return None


def test_overhead_lands_in_spec_and_cgroup(kube, make_runtime_class, pod_factory, evidence):
    overhead = {"cpu": "250m", "memory": "120Mi"}
    name_rc = make_runtime_class(RUNC.handler, overhead={"podFixed": overhead})
    pod = pod_factory(PodSpec(runtime=RUNC, name_prefix="overhead", runtime_class_name=name_rc,
                              resources={"limits": {"memory": "64Mi", "cpu": "100m"}}))
    data = pod.read()
    evidence.add("pod.spec.overhead", data["spec"].get("overhead"))
    assert data["spec"].get("overhead") == overhead
    if not hasattr(kube, "node"):
        pytest.skip("the pod's cgroup is on a node sandcheck does not run: checked the spec only")
    cgroup = _pod_cgroup(data["metadata"]["uid"])
    assert cgroup is not None, "no pod-level memory cgroup (kubelet cgroupsPerQOS off?)"
    limit = int((cgroup / "memory.limit_in_bytes").read_text())
    evidence.add("pod cgroup memory.limit_in_bytes", limit, path=str(cgroup))
    assert limit == (64 + 120) * 1024 * 1024


def test_deleting_runtime_class_keeps_running_pods(kube, make_runtime_class, pod_factory,
                                                   evidence):
    name_rc = make_runtime_class(RUNC.handler)
    pod = pod_factory(PodSpec(runtime=RUNC, name_prefix="rcdel", runtime_class_name=name_rc))
    kube.node_api.delete_runtime_class(name_rc)
    time.sleep(2)  # give the kubelet a chance to (wrongly) react before looking
    data = pod.read()
    result = pod.exec(["/bin/true"])
    evidence.add("after deleting the RuntimeClass", {"phase": data["status"]["phase"],
                                                      "exec_exit_code": result.exit_code})
    assert data["status"]["phase"] == "Running"
    assert result.exit_code == 0


def test_seed_walkthrough_gvisor(kube, pod_factory, evidence):
    """containerd with a runsc handler, RuntimeClass gvisor -> runsc, a pod with
    runtimeClassName gvisor and nodeName set: Running, described with its class."""
    runsc = next((r for r in kube.runtimes if r.name == "runsc"), None)
    if runsc is None:
        pytest.skip("runsc is not among --runtimes: add it to run the gVisor walkthrough")
    rc = kube.node_api.read_runtime_class(runsc.runtime_class)
    evidence.add("RuntimeClass", {"name": rc.metadata.name, "handler": rc.handler})
    assert (rc.metadata.name, rc.handler) == ("gvisor", "runsc")
    node = kube.core.list_node().items[0].metadata.name
    try:
        pod = pod_factory(PodSpec(runtime=runsc, name_prefix="seed", node_name=node))
    except ComponentError as exc:
        pytest.fail(str(exc), pytrace=False)
    data = pod.read()
    assert data["spec"]["nodeName"] == node and data["status"]["phase"] == "Running"
    text = pod.describe()
    evidence.add("kubectl describe pod", text)
    assert any(ln.startswith("Runtime Class Name:") and ln.split(":", 1)[1].strip() == "gvisor"
               for ln in text.splitlines())
