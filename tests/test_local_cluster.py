"""The local and kubeconfig backends' parts that need no cluster: certificates that must
pass real TLS handshakes, kubeconfigs the Kubernetes client loads, kubelet's mount
namespace on this kernel, the binaries lookup, leftovers, pod manifests, exec status
parsing and start phases."""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from sandcheck.catalog import Catalog
from sandcheck.clusters.base import (
    RUN_LABEL,
    BackendSettings,
    Capability,
    KubernetesBackend,
    PodSpec,
)
from sandcheck.clusters.kubeexec import exit_code_from_status
from sandcheck.clusters.kubemanifest import pod_manifest
from sandcheck.clusters.kubenamespace import namespace_for
from sandcheck.clusters.local import binaries, kubelet
from sandcheck.clusters.local.cluster import open_backend
from sandcheck.clusters.local.leftovers import remove_container_log_links
from sandcheck.clusters.local.pki import (
    KUBECONFIG_CLIENTS,
    Pki,
    cluster_requests,
    write_kubeconfig,
)
from sandcheck.errors import UserError
from sandcheck.host import proc as hostproc
from sandcheck.host.mounts import mounts_under

LOOPBACK = "127.0.0.1"
NODE_NAME = kubelet.NODE_NAME
SERVICE_IP = "10.96.0.1"
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None,
                                   reason="openssl CLI not installed: apt-get install openssl")
needs_root_unshare = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare (apt-get install util-linux) for a mount namespace")


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load(None)


@pytest.fixture(scope="module")
def cluster_pki(tmp_path_factory) -> Pki:
    """The run's CA and every certificate of a cluster, issued once (openssl is slow)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed: apt-get install openssl")
    pki = Pki(tmp_path_factory.mktemp("pki"))
    pki.make_ca()
    for req in cluster_requests(NODE_NAME, LOOPBACK, SERVICE_IP):
        pki.issue(req)
    return pki


def _context(pki: Pki, side: int, cert: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(side)
    ctx.load_verify_locations(cafile=str(pki.path("ca", "crt")))
    ctx.load_cert_chain(str(pki.path(cert, "crt")), str(pki.path(cert, "key")))
    ctx.verify_mode = ssl.CERT_REQUIRED
    if side == ssl.PROTOCOL_TLS_CLIENT:
        ctx.check_hostname = True
    return ctx


def _handshake(pki: Pki, server_cert: str, client_cert: str, hostname: str) -> str | None:
    """A mutual-TLS exchange over loopback as the components make it: None when both sides
    accept each other, else the first error seen."""
    server_ctx = _context(pki, ssl.PROTOCOL_TLS_SERVER, server_cert)
    client_ctx = _context(pki, ssl.PROTOCOL_TLS_CLIENT, client_cert)
    errors: list[str] = []
    with socket.create_server((LOOPBACK, 0)) as listener:
        listener.settimeout(10)

        def serve() -> None:
            try:
                conn, _ = listener.accept()
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"ok")
            except (OSError, ssl.SSLError) as exc:
                errors.append(f"server: {exc}")

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            with socket.create_connection(listener.getsockname(), timeout=10) as raw, \
                    client_ctx.wrap_socket(raw, server_hostname=hostname) as tls:
                if tls.recv(2) != b"ok":
                    errors.append("client: no answer")
        except (OSError, ssl.SSLError) as exc:
            errors.append(f"client: {exc}")
        thread.join(10)
    return errors[0] if errors else None


@pytest.mark.parametrize("hostname", ["kubernetes.default.svc", LOOPBACK, SERVICE_IP])
def test_clients_reach_the_apiserver_by_every_name_it_serves(cluster_pki, hostname):
    assert _handshake(cluster_pki, "apiserver", "admin", hostname) is None


def test_the_apiserver_reaches_kubelet_by_the_node_name(cluster_pki):
    assert _handshake(cluster_pki, "kubelet-serving", "apiserver-kubelet-client",
                      NODE_NAME) is None


def test_a_name_outside_the_sans_and_a_server_only_cert_are_refused(cluster_pki):
    assert _handshake(cluster_pki, "apiserver", "admin", "elsewhere.example") is not None
    # kubelet's serving certificate is no client certificate: the API server would refuse it.
    assert _handshake(cluster_pki, "apiserver", "kubelet-serving", LOOPBACK) is not None


def test_kubelet_client_identity_is_what_the_node_authorizer_admits(cluster_pki):
    subject = subprocess.run(
        ["openssl", "x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in",
         str(cluster_pki.path("kubelet", "crt"))],
        capture_output=True, text=True, timeout=30, check=True).stdout
    assert f"CN=system:node:{NODE_NAME}" in subject and "O=system:nodes" in subject
    assert oct(cluster_pki.path("kubelet", "key").stat().st_mode & 0o777) == "0o600"


def test_every_kubeconfig_loads_in_the_kubernetes_client(cluster_pki, tmp_path):
    pytest.importorskip("kubernetes")
    from kubernetes import config as kconfig

    server = f"https://{LOOPBACK}:6443"
    for req in cluster_requests(NODE_NAME, LOOPBACK, SERVICE_IP):
        if req.name not in KUBECONFIG_CLIENTS:
            continue
        path = write_kubeconfig(tmp_path / f"{req.name}.kubeconfig", server, cluster_pki, req)
        assert path.stat().st_mode & 0o077 == 0, "a kubeconfig naming a key is root's only"
        client = kconfig.new_client_from_config(config_file=str(path))
        conf = client.configuration
        assert conf.host == server
        assert Path(conf.cert_file).read_bytes() == cluster_pki.path(req.name, "crt").read_bytes()
        client.close()


def _string_values(obj) -> list[str]:
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in _string_values(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in _string_values(v)]
    return [obj] if isinstance(obj, str) else []


def test_kubelet_config_names_no_host_path(tmp_path):
    cfg = kubelet.kubelet_config(port=1, healthz_port=2, ca=tmp_path / "ca", cert=tmp_path / "c",
                         key=tmp_path / "k", cgroup_root="/sandcheck-x",
                         resolv_conf=tmp_path / "resolv", pod_logs=tmp_path / "pod-logs",
                         plugins=tmp_path / "plugins", endpoint="unix:///x.sock")
    paths = [s for s in _string_values(cfg) if s.startswith("/") and s != cfg["cgroupRoot"]]
    outside = [p for p in paths if not p.startswith(str(tmp_path))]
    assert paths and outside == [], f"kubelet would write to the host at {outside}"


@needs_root_unshare
def test_kubelet_sees_its_sysctls_and_the_host_keeps_its_own(tmp_path):
    binds = kubelet.sysctl_binds(tmp_path / "fake")
    assert binds, "this kernel has none of kubelet's tunables"
    targets = [target for _, target in binds]
    before = [Path(t).read_text() for t in targets]
    out = subprocess.run(kubelet.in_mount_namespace(binds, "/proc", ["cat", *targets]),
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    keys = [t.removeprefix("/proc/sys/") for t in targets]
    assert out.stdout.split() == [kubelet.KUBELET_SYSCTLS[k] for k in keys]
    assert [Path(t).read_text() for t in targets] == before
    assert mounts_under("/proc/sys") == []


@needs_root_unshare
def test_only_the_apiserver_resolves_the_node_name(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text(kubelet.hosts_file(Path("/etc/hosts").read_text(), (NODE_NAME,)))
    out = subprocess.run(kubelet.in_mount_namespace([(hosts, "/etc/hosts")], "/",
                                            ["getent", "hosts", NODE_NAME]),
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [LOOPBACK, NODE_NAME]
    assert NODE_NAME not in Path("/etc/hosts").read_text()


def test_missing_kubernetes_binaries_name_the_provision_command(tmp_path, monkeypatch):
    monkeypatch.setenv("SANDCHECK_CACHE", str(tmp_path))
    with pytest.raises(UserError) as err:
        binaries.find_binaries()
    assert "sandcheck provision --kubernetes" in str(err.value)
    for name in ("kubelet", "kube-apiserver", "etcd"):
        assert name in str(err.value)
    assert binaries.unavailable() == str(err.value)


def test_the_provisioned_link_is_preferred_to_the_cached_build(tmp_path, monkeypatch):
    monkeypatch.setenv("SANDCHECK_CACHE", str(tmp_path))
    for places in binaries.candidates().values():
        for place in places:
            place.parent.mkdir(parents=True, exist_ok=True)
            place.write_text("#!/bin/sh\n")
            place.chmod(0o755)
    (tmp_path / "path" / "kubelet").chmod(0o644)  # a link that is not executable
    if any(shutil.which(tool) is None for tool in binaries.HOST_TOOLS):
        pytest.skip("openssl, unshare or mount missing on PATH")
    found = binaries.find_binaries()
    assert found["etcd"] == str(tmp_path / "path" / "etcd")
    assert found["kubelet"].startswith(str(tmp_path / "bin" / "kubernetes-"))


def test_open_backend_checks_containerd_and_makes_nothing(catalog, tmp_path):
    runtimes = catalog.select("runc")
    with pytest.raises(UserError, match="--containerd"):
        open_backend(BackendSettings(runtimes, "t1", options={"containerd": str(tmp_path / "x")}))
    # Any executable passes the constructor's check; nothing runs it before start().
    backend = open_backend(BackendSettings(runtimes, "t2", options={"containerd": sys.executable}))
    assert isinstance(backend, KubernetesBackend)
    assert {Capability.KUBERNETES_API, Capability.CRI_INSPECT} <= backend.capabilities
    assert Capability.CRI_DIRECT not in backend.capabilities, "kubelet kills crictl's pods"
    assert not backend.workdir.exists() and not backend.node.workdir.exists()
    assert hostproc.processes_mentioning(str(backend.workdir)) == []
    backend.stop()  # a backend never started stops cleanly
    assert not backend.workdir.exists()


def test_only_this_runs_container_log_links_go(tmp_path):
    logs, workdir = tmp_path / "containers", tmp_path / "local-abc"
    logs.mkdir()
    (logs / "ours.log").symlink_to(workdir / "pod-logs" / "0.log")
    (logs / "neighbour.log").symlink_to(tmp_path / "local-abcd" / "pod-logs" / "0.log")
    (logs / "plain.log").write_text("")
    done = remove_container_log_links(workdir, remove_dir=True, logs_dir=logs)
    assert sorted(p.name for p in logs.iterdir()) == ["neighbour.log", "plain.log"]
    assert done == [f"rm {logs / 'ours.log'}"], "a non-empty logs dir must stay"
    for name in ("neighbour.log", "plain.log"):
        (logs / name).unlink()
    assert remove_container_log_links(workdir, remove_dir=True, logs_dir=logs) == [
        f"rmdir {logs}"]
    assert not logs.exists()


def test_pod_manifest(catalog):
    runsc = catalog.select("runsc")[0]
    spec = PodSpec(runtime=runsc, command=["/probe", "sleep"], seccomp="Unconfined",
                   drop_capabilities=["ALL"], run_as_user=1000, labels={"a": "b"})
    pod = pod_manifest(spec, "p1", "ns1", "run1")
    c = pod["spec"]["containers"][0]
    assert pod["spec"]["runtimeClassName"] == runsc.runtime_class
    assert "nodeName" not in pod["spec"]
    assert c["imagePullPolicy"] == "Never"
    assert c["image"] == "localhost/sandcheck/probe:latest"
    assert c["command"] == ["/probe", "sleep"]
    assert c["securityContext"] == {"seccompProfile": {"type": "Unconfined"},
                                    "capabilities": {"drop": ["ALL"]}, "runAsUser": 1000}
    assert pod["metadata"]["labels"][RUN_LABEL] == "run1"
    assert pod["metadata"]["labels"]["a"] == "b"
    override = pod_manifest(PodSpec(runtime=runsc, runtime_class_name="other", privileged=True),
                            "p2", "ns1", "run1")
    assert override["spec"]["runtimeClassName"] == "other"
    assert override["spec"]["containers"][0]["securityContext"]["privileged"] is True
    assert override["spec"]["containers"][0]["securityContext"]["seccompProfile"] == {
        "type": "RuntimeDefault"}


def test_exit_code_from_status():
    assert exit_code_from_status('{"metadata":{},"status":"Success"}') == 0
    failure = {"status": "Failure", "reason": "NonZeroExitCode",
               "details": {"causes": [{"reason": "ExitCode", "message": "3"}]}}
    assert exit_code_from_status(json.dumps(failure)) == 3
    not_run = {"status": "Failure", "reason": "InternalError",
               "message": "exec: \"nope\": executable file not found"}
    assert exit_code_from_status(json.dumps(not_run)) is None
    assert exit_code_from_status("") is None


def test_namespace_for_is_a_dns_label():
    ns = namespace_for("20261125144835-615a85")
    assert ns == "sandcheck-20261125144835-615a85"
    assert len(namespace_for("x" * 80)) <= 63
