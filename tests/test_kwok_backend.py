"""The kwok backend: the local cluster plus simulated nodes kept by kwok.

The pure parts (node objects, kwok's configuration, the CRI log format, the options) are
checked without a cluster. The rest brings the backend up for real (root, the local
backend's binaries and `sandcheck provision --kwok`): simulated nodes Ready with their
labels and handlers, a pod of each runtime class pinned to one Running at once, its log
answering what a real pod of that class printed on the real node, deletion, and a
teardown that leaves nothing. A scale smoke registers 200 nodes and prints how long they
took to be Ready.
"""

from __future__ import annotations

import json
import time

import pytest
import yaml
from helpers import skip_unless_kwok_runs, started_kwok

from sandcheck.catalog import Catalog
from sandcheck.clusters import registry
from sandcheck.clusters.base import RUNTIME_LABEL, BackendSettings, Capability, PodSpec
from sandcheck.clusters.kwok.cluster import DEFAULT_NODES, KwokCluster, open_backend
from sandcheck.clusters.kwok.config import SERVED_ANNOTATION, SIMULATED_SELECTOR, config_text
from sandcheck.clusters.kwok.logs import (
    GROUP,
    NUDGE,
    PLURAL,
    VERSION,
    cri_log,
    logs_object,
    write_recordings,
)
from sandcheck.clusters.kwok.nodes import node_manifest, node_names, ready_nodes
from sandcheck.clusters.local.kubelet import NODE_NAME
from sandcheck.errors import UserError
from sandcheck.host import runcgroups
from sandcheck.host.workdir import WORK_BASE
from sandcheck.timeouts import TIMEOUTS, wait_until

TEMPLATE = {"nodeInfo": {"kernelVersion": "6.1.0-test", "kubeletVersion": "v1.34.12",
                         "containerRuntimeVersion": "containerd://1.7.35",
                         "osImage": "Debian GNU/Linux 12 (bookworm)", "architecture": "amd64",
                         "operatingSystem": "linux", "machineID": "the-real-one"},
            "runtimeHandlers": [{"name": "runc", "features": {"recursiveReadOnlyMounts": True}}]}


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load(None)


# -- without a cluster ------------------------------------------------------------------


def test_node_names_are_zero_padded_so_sorted_order_is_numeric():
    names = node_names(12)
    assert names[0] == "kwok-node-0000" and names[11] == "kwok-node-0011"
    assert sorted(names) == names
    wide = node_names(10001)
    assert wide[-1] == "kwok-node-10000" and sorted(wide) == wide


def test_a_simulated_node_is_a_labelled_copy_of_the_recording_node(catalog):
    runtimes = catalog.select("runc,runsc")
    node = node_manifest("kwok-node-0003", 3, run_id="r1", port=4321, runtimes=runtimes,
                         template=TEMPLATE)
    labels = node["metadata"]["labels"]
    assert labels["kubernetes.io/hostname"] == "kwok-node-0003"
    assert labels["kubernetes.io/os"] == "linux" and labels["kubernetes.io/arch"] == "amd64"
    assert labels["type"] == "kwok" and labels["node.kubernetes.io/instance-type"]
    status = node["status"]
    info = status["nodeInfo"]
    assert info["containerRuntimeVersion"].startswith("containerd://")
    assert info["kernelVersion"] == "6.1.0-test" and info["kubeletVersion"] == "v1.34.12"
    assert info["machineID"] != "the-real-one"  # an identity of its own
    assert status["runtimeHandlers"] == [
        {"name": "runc", "features": {"recursiveReadOnlyMounts": True}}, {"name": "runsc"}]
    assert status["capacity"]["pods"] == "110" and status["allocatable"]["cpu"]
    assert status["daemonEndpoints"]["kubeletEndpoint"]["Port"] == 4321
    assert {"type": "Hostname", "address": "127.0.0.1"} in status["addresses"]
    assert node["spec"]["podCIDR"] == "10.128.3.0/24"
    # The scheduler keeps unpinned pods off it; a pod pinned with nodeName is not scheduled.
    assert node["spec"]["taints"][0]["effect"] == "NoSchedule"
    other = node_manifest("kwok-node-0004", 4, run_id="r1", port=4321, runtimes=runtimes,
                          template=TEMPLATE)
    assert other["status"]["nodeInfo"]["systemUUID"] != info["systemUUID"]
    assert other["status"]["addresses"][0] != status["addresses"][0]


def test_kwoks_configuration_manages_the_fleet_and_gates_the_suites_pods(tmp_path):
    docs = list(yaml.safe_load_all(config_text(server_address="127.0.0.1:1",
                                               cert=tmp_path / "c", key=tmp_path / "k")))
    options = docs[0]["options"]
    assert docs[0]["kind"] == "KwokConfiguration"
    assert options["manageNodesWithLabelSelector"] == SIMULATED_SELECTOR
    assert options["enableCRDs"] == ["Logs"]
    assert options["nodeLeaseDurationSeconds"] == int(TIMEOUTS.simulated_node_lease)
    stages = {d["metadata"]["name"]: d["spec"] for d in docs[1:]}
    assert {d["kind"] for d in docs[1:]} == {"Stage"}
    gated = stages["sandcheck-pod-running-served"]["selector"]["matchExpressions"]
    assert any(SERVED_ANNOTATION in e["key"] and e["operator"] == "Exists" for e in gated)
    free = stages["sandcheck-pod-running"]["selector"]["matchExpressions"]
    assert any(RUNTIME_LABEL in e["key"] and e["operator"] == "DoesNotExist" for e in free)
    assert stages["sandcheck-pod-delete"]["next"] == {"delete": True}


@pytest.mark.parametrize("text", ["", "one line\n", "a\nb", "\n\nblank lines\n\n",
                                  "tab\tand ünïcode\r\nlast"])
def test_a_recording_is_written_as_cri_log_records(text):
    records = cri_log(text, "2026-01-01T00:00:00.000000000Z").splitlines(keepends=True)
    rebuilt = ""
    for record in records:
        when, stream, tag, content = record[:-1].split(" ", 3)
        assert (when, stream) == ("2026-01-01T00:00:00.000000000Z", "stdout")
        rebuilt += content + ("\n" if tag == "F" else "")
    assert rebuilt == text


def test_a_pods_logs_object_names_its_runtimes_recordings(tmp_path):
    pod = {"metadata": {"name": "p", "namespace": "ns", "uid": "u1",
                        "labels": {RUNTIME_LABEL: "runsc"}},
           "spec": {"containers": [{"name": "probe"}, {"name": "side"}]}}
    body = logs_object(pod, tmp_path)
    assert (body["metadata"]["name"], body["metadata"]["namespace"]) == ("p", "ns")
    assert body["metadata"]["ownerReferences"][0]["uid"] == "u1"
    assert body["spec"]["logs"] == [
        {"containers": ["probe"], "logsFile": str(tmp_path / "runsc" / "probe.log")},
        {"containers": ["side"], "logsFile": str(tmp_path / "runsc" / "side.log")}]
    with pytest.raises(UserError):
        write_recordings(tmp_path, {"../etc": {"probe": "x"}})


def test_the_backend_is_registered_with_its_options(catalog):
    entry = registry.entry("kwok")
    assert [o.flag for o in entry.options] == ["--containerd", "--kwok-nodes"]
    assert registry.for_workdir(WORK_BASE / "kwok-20260101000000-abcdef") is entry
    runtimes = catalog.select("runc")
    backend = open_backend(BackendSettings(runtimes, "t1", options={"kwok_nodes": None}))
    assert isinstance(backend, KwokCluster) and len(backend.simulated) == DEFAULT_NODES
    assert backend.capabilities == frozenset({Capability.KUBERNETES_API,
                                              Capability.SIMULATED_NODES,
                                              Capability.CONTROL_PLANE_PROCESSES})
    assert backend.default_node_selector == "type=kwok"
    assert backend.workdir == WORK_BASE / "kwok-t1" and not backend.workdir.exists()
    with pytest.raises(UserError, match="--kwok-nodes"):
        open_backend(BackendSettings(runtimes, "t2", options={"kwok_nodes": 0}))


# -- a real bring-up ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def kwok():
    skip_unless_kwok_runs()
    backend = started_kwok(5, "runc,crun,runsc")
    try:
        yield backend
    finally:
        backend.stop()


def _log(kwok: KwokCluster, name: str, namespace: str, container: str = "probe") -> str:
    """GET .../pods/NAME/log?container=C through the API server, byte for byte."""
    response = kwok.core.read_namespaced_pod_log(name, namespace, container=container,
                                                 _preload_content=False,
                                                 _request_timeout=TIMEOUTS.api_call)
    return response.data.decode()


@pytest.mark.integration
def test_the_simulated_nodes_are_ready_with_labels_and_handlers(kwok):
    assert ready_nodes(kwok.core) == set(kwok.simulated)
    nodes = {n.metadata.name: n for n in kwok.core.list_node().items}
    assert set(nodes) == {*kwok.simulated, NODE_NAME}  # the real (recording) node stays
    handlers = {rt.handler for rt in kwok.runtimes}
    for name in kwok.simulated:
        node = nodes[name]
        assert node.metadata.labels["type"] == "kwok"
        assert node.metadata.labels["kubernetes.io/hostname"] == name
        assert {h.name for h in node.status.runtime_handlers} == handlers
        assert node.status.node_info.container_runtime_version.startswith("containerd://")
        assert node.status.capacity["pods"] == "110"
    leases = kwok.kubectl("get", "leases", "-n", "kube-node-lease", "-o", "name").stdout
    assert all(f"lease.coordination.k8s.io/{n}" in leases.split() for n in kwok.simulated)


@pytest.mark.integration
def test_a_pinned_pod_of_each_class_runs_and_replays_the_real_nodes_log(kwok):
    """Each runtime's probe report, printed by a real pod on the real node, is the log of
    a pod of that class on a simulated node."""
    assert kwok.runtimes, kwok.missing_runtimes
    recordings: dict[str, dict[str, str]] = {}
    for rt in kwok.runtimes:
        real = kwok.create_pod(PodSpec(runtime=rt, name_prefix=f"rec-{rt.name}",
                                       node_name=NODE_NAME,
                                       command=["/bin/sh", "-c", "/probe json; exec /probe sleep"]))

        def printed(real=real) -> str | None:
            text = _log(kwok, real.name, real.namespace)
            try:
                json.loads(text)
            except ValueError:
                return None
            return text

        recordings[rt.name] = {"probe": wait_until(printed, TIMEOUTS.exec,
                                                   f"{rt.name}'s report on {NODE_NAME}",
                                                   interval=TIMEOUTS.ready_poll)}
        kwok.delete_pod(real)
    kwok.serve_logs(recordings)
    for i, rt in enumerate(kwok.runtimes):
        node = kwok.simulated[i % len(kwok.simulated)]
        pod = kwok.create_pod(PodSpec(runtime=rt, name_prefix=f"sim-{rt.name}", node_name=node))
        seconds = pod.timings.total()
        obj = kwok.read_pod(pod.name, pod.namespace)
        print(f"{rt.name}: Running on {node} {seconds:.3f}s after the create call")
        assert pod.node_name == node and obj["status"]["phase"] == "Running"
        assert obj["spec"]["runtimeClassName"] == rt.runtime_class
        assert all(c["ready"] and "running" in c["state"]
                   for c in obj["status"]["containerStatuses"])
        assert seconds < TIMEOUTS.exec
        assert _log(kwok, pod.name, pod.namespace) == recordings[rt.name]["probe"]
        started = time.monotonic()
        kwok.delete_pod(pod)
        print(f"{rt.name}: deleted in {time.monotonic() - started:.3f}s")
        assert pod.name not in {p.metadata.name for p in
                                kwok.core.list_namespaced_pod(pod.namespace).items}


@pytest.mark.integration
def test_kwoks_list_of_logs_is_refreshed_after_the_last_pod_served(kwok):
    """The nudge object changes once pods were served, so kwok's cached list of Logs
    objects, keyed by a version that can run ahead of its store, is rebuilt."""
    rt = kwok.runtimes[0]
    pod = kwok.create_pod(PodSpec(runtime=rt, name_prefix="nudge", node_name=kwok.simulated[0]))
    try:
        served = kwok.pod_logs.served

        def nudged() -> int | None:
            obj = kwok.pod_logs.custom.get_namespaced_custom_object(
                GROUP, VERSION, "default", PLURAL, NUDGE, _request_timeout=TIMEOUTS.api_call)
            count = int((obj["metadata"].get("annotations") or {}).get(
                "sandcheck.dev/served", 0))
            return count if count >= served else None

        assert served >= 1
        assert wait_until(nudged, TIMEOUTS.exec, "the nudge after the last pod served",
                          interval=TIMEOUTS.ready_poll) == served
        assert not kwok.pod_logs.problems
    finally:
        kwok.delete_pod(pod)


@pytest.mark.integration
def test_a_recording_comes_back_exactly_and_can_be_replaced(kwok):
    rt = kwok.runtimes[0]
    pod = kwok.create_pod(PodSpec(runtime=rt, name_prefix="edge", node_name=kwok.simulated[-1]))
    try:
        for text in ("\n\nblank lines, a tab\tand ünïcode\r\nno newline at the end", "again\n"):
            kwok.serve_logs({rt.name: {"probe": text}})
            assert _log(kwok, pod.name, pod.namespace) == text
    finally:
        kwok.delete_pod(pod)


@pytest.mark.integration
def test_a_simulated_pod_shows_nothing_of_a_host(kwok):
    pod = kwok.create_pod(PodSpec(runtime=kwok.runtimes[0], name_prefix="nohost",
                                  node_name=kwok.simulated[0]))
    try:
        assert kwok.is_simulated(pod)
        assert kwok.inspect_pod(pod) == {} and kwok.host_pids(pod) == []
        assert kwok.sandbox_handler(pod) is None
        # The kernel its node reports: a copy of the recording node's, whose reports the
        # simulated cells replay (the kernel checks judge the recording).
        real = kwok.core.read_node(NODE_NAME).status.node_info.kernel_version
        assert kwok.node_kernel(pod) == real
    finally:
        kwok.delete_pod(pod)


@pytest.mark.integration
def test_teardown_leaves_nothing(kwok):
    kwok_proc = kwok.components["kwok"].proc
    workdir = kwok.workdir
    assert kwok_proc.poll() is None and workdir.is_dir()
    kwok.stop()
    assert kwok_proc.poll() is not None, "kwok still runs"
    assert not workdir.exists(), f"{workdir} is left"
    assert not kwok.node.workdir.exists(), f"{kwok.node.workdir} is left"
    assert not runcgroups.cgroups_of_run(kwok.run_id), "the run's cgroups are left"


@pytest.mark.integration
def test_two_hundred_simulated_nodes_come_up():
    """Scale smoke: no bound asserted, the time printed."""
    skip_unless_kwok_runs()
    started = time.monotonic()
    backend = started_kwok(200, "runc")
    try:
        up = time.monotonic() - started
        assert len(ready_nodes(backend.core)) == 200
        print(f"200 simulated nodes: created in "
              f"{backend.timings['simulated_nodes_created_seconds']:.1f}s, all Ready "
              f"{backend.timings['simulated_nodes_ready_seconds']:.1f}s later; whole bring-up "
              f"{up:.1f}s")
    finally:
        backend.stop()
    assert not backend.workdir.exists()
