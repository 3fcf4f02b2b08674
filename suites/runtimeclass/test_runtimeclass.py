"""RuntimeClass: the Kubernetes side of the promise. A pod that names a class runs on its
handler, `kubectl describe` says so, and the cluster treats a missing class, a missing
handler, scheduling, overhead and deletion the way the API documents."""

from __future__ import annotations

import time

import pytest

from sandcheck.clusters.base import Capability, PodSpec, Refused
from sandcheck.errors import ComponentError
from sandcheck.fixtures.pods import (
    events_within,
    node_kernel,
    require,
    run_probe,
    sandbox_handler,
)
from sandcheck.host.cgroups import kubelet_pod_cgroup, memory_limit
from sandcheck.timeouts import TIMEOUTS


def test_pod_runs_on_its_handler(kube, runtime, pod_factory, evidence):
    pod = pod_factory(PodSpec(runtime=runtime, name_prefix=f"rc-{runtime.name}"))
    data = kube.pod_object(pod)
    evidence.add("pod.spec.runtimeClassName", data["spec"].get("runtimeClassName"))
    assert data["spec"]["runtimeClassName"] == runtime.runtime_class
    probe = run_probe(pod)
    release = probe.data["uname"]["release"]
    node_release = node_kernel(kube, pod)["release"]
    evidence.add(**probe.evidence("uname"))
    if runtime.isolation.own_kernel:
        assert release != node_release, f"{runtime.name} pod runs on the node's kernel"
    elif runtime.isolation.own_kernel is False:
        assert release == node_release
    handler = sandbox_handler(kube, pod)
    if handler is not None:
        evidence.add("CRI sandbox runtime handler", handler)
        assert handler == runtime.handler


def test_describe_shows_runtime_class(kube, runtime, pod_factory, evidence):
    pod = pod_factory(PodSpec(runtime=runtime, name_prefix=f"desc-{runtime.name}"))
    text = kube.describe(pod)
    evidence.add("kubectl describe pod", text)
    line = next((ln for ln in text.splitlines() if ln.startswith("Runtime Class Name:")), None)
    assert line is not None, "kubectl describe shows no Runtime Class Name"
    assert line.split(":", 1)[1].strip() == runtime.runtime_class


def test_missing_runtime_class_is_rejected_at_admission(kube, native_runtime, submit_pod,
                                                        evidence):
    spec = PodSpec(runtime=native_runtime, name_prefix="norc",
                   runtime_class_name="sandcheck-absent")
    with pytest.raises(Refused) as err:
        submit_pod(spec)
    message = err.value.message
    evidence.add("API answer", {"status": err.value.status, "message": message})
    assert err.value.status == 403
    assert 'RuntimeClass "sandcheck-absent" not found' in message


def test_unknown_handler_leaves_pod_pending(kube, native_runtime, make_runtime_class,
                                            submit_pod, evidence):
    name_rc = make_runtime_class("sandcheck-no-such-handler")
    spec = PodSpec(runtime=native_runtime, name_prefix="nohandler", runtime_class_name=name_rc)
    name, ns = submit_pod(spec)
    events = events_within(kube, name, ns, "FailedCreatePodSandBox")
    pod = kube.read_pod(name, ns)
    evidence.add("events", events)
    evidence.add("pod phase", pod["status"].get("phase"))
    assert events, f"no FailedCreatePodSandBox event within {TIMEOUTS.event:.0f}s"
    assert any("sandcheck-no-such-handler" in message for message in events)
    assert pod["status"].get("phase") == "Pending"


def test_scheduling_is_merged_and_conflicts_rejected(kube, native_runtime, make_runtime_class,
                                                    submit_pod, evidence):
    toleration = {"key": "sandcheck.dev/sandbox", "operator": "Exists", "effect": "NoSchedule"}
    name_rc = make_runtime_class(native_runtime.handler, scheduling={
        "nodeSelector": {"sandcheck.dev/rc": "yes"}, "tolerations": [toleration]})
    spec = PodSpec(runtime=native_runtime, name_prefix="sched", runtime_class_name=name_rc)
    name, ns = submit_pod(spec)
    pod = kube.read_pod(name, ns)["spec"]
    evidence.add("admitted pod spec", {k: pod.get(k) for k in ("nodeSelector", "tolerations")})
    assert pod["nodeSelector"] == {"sandcheck.dev/rc": "yes"}
    assert toleration in pod["tolerations"]
    conflicting = PodSpec(runtime=native_runtime, name_prefix="conflict",
                          runtime_class_name=name_rc, node_selector={"sandcheck.dev/rc": "no"})
    with pytest.raises(Refused) as err:
        submit_pod(conflicting)
    evidence.add("API answer to a conflicting nodeSelector", err.value.body)
    assert err.value.status in (400, 403, 422)
    assert "conflict" in (err.value.body or err.value.message).lower()


def test_class_runs_only_where_its_handler_is(kube, runtime, make_runtime_class, submit_pod,
                                              pod_factory, evidence):
    """Nodes with different handler sets: a pod of the class lands on a node with the
    handler (the class's scheduling); a class of the same handler without scheduling, on
    a node that lacks it, fails visibly."""
    lacking = kube.nodes_lacking(runtime.handler)
    if not lacking:
        pytest.skip(f"needs nodes without the {runtime.handler} handler beside nodes with it: "
                    "run with --backend kind --kind-workers 1 (or more)")
    pod = pod_factory(PodSpec(runtime=runtime, name_prefix=f"where-{runtime.name}"))
    node = kube.pod_object(pod)["spec"]["nodeName"]
    evidence.add("RuntimeClass scheduling",
                 kube.read_runtime_class(runtime.runtime_class).get("scheduling"))
    evidence.add("node of the pod", node, nodes_lacking_the_handler=lacking)
    assert node not in lacking, f"a {runtime.name} pod was scheduled onto {node}"
    bare = make_runtime_class(runtime.handler)
    name, ns = submit_pod(PodSpec(runtime=runtime, name_prefix="lacks",
                                  runtime_class_name=bare, node_name=lacking[0]))
    events = events_within(kube, name, ns, "FailedCreatePodSandBox")
    evidence.add("events on a node without the handler", events)
    assert any(runtime.handler in message for message in events), \
        f"no FailedCreatePodSandBox naming {runtime.handler} within {TIMEOUTS.event:.0f}s"
    assert kube.read_pod(name, ns)["status"].get("phase") == "Pending"


def test_overhead_lands_in_spec_and_cgroup(kube, native_runtime, make_runtime_class,
                                           pod_factory, evidence):
    overhead = {"cpu": "250m", "memory": "120Mi"}
    name_rc = make_runtime_class(native_runtime.handler, overhead={"podFixed": overhead})
    pod = pod_factory(PodSpec(runtime=native_runtime, name_prefix="overhead",
                              runtime_class_name=name_rc,
                              resources={"limits": {"memory": "64Mi", "cpu": "100m"}}))
    data = kube.pod_object(pod)
    evidence.add("pod.spec.overhead", data["spec"].get("overhead"))
    assert data["spec"].get("overhead") == overhead
    require(kube, Capability.NODE_CGROUPS)  # the spec is checked; the cgroup needs the node
    cgroup = kubelet_pod_cgroup(data["metadata"]["uid"])
    assert cgroup is not None, "no pod-level memory cgroup (kubelet cgroupsPerQOS off?)"
    limit = memory_limit(cgroup)
    evidence.add("pod cgroup memory limit", limit, path=str(cgroup))
    assert limit == (64 + 120) * 1024 * 1024


def test_deleting_runtime_class_keeps_running_pods(kube, native_runtime, make_runtime_class,
                                                   pod_factory, evidence):
    name_rc = make_runtime_class(native_runtime.handler)
    pod = pod_factory(PodSpec(runtime=native_runtime, name_prefix="rcdel",
                              runtime_class_name=name_rc))
    kube.delete_runtime_class(name_rc)
    # A window for a wrong reaction: no event marks "nothing happened", so this is a wait
    # by design, not a guess at a readiness that could be observed instead.
    time.sleep(TIMEOUTS.kubelet_reaction)
    data = kube.pod_object(pod)
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
    rc = kube.read_runtime_class(runsc.runtime_class)
    evidence.add("RuntimeClass", {"name": rc["metadata"]["name"], "handler": rc["handler"]})
    assert (rc["metadata"]["name"], rc["handler"]) == ("gvisor", "runsc")
    node = kube.node_names()[0]
    try:
        pod = pod_factory(PodSpec(runtime=runsc, name_prefix="seed", node_name=node))
    except ComponentError as exc:
        pytest.fail(str(exc), pytrace=False)
    data = kube.pod_object(pod)
    assert data["spec"]["nodeName"] == node and data["status"]["phase"] == "Running"
    text = kube.describe(pod)
    evidence.add("kubectl describe pod", text)
    assert any(ln.startswith("Runtime Class Name:") and ln.split(":", 1)[1].strip() == "gvisor"
               for ln in text.splitlines())
