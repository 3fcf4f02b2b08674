"""The local and kubeconfig backends' pure parts: certificates, kubeconfigs, kubelet's
configuration, pod manifests, exec status parsing and start phases. No cluster needed."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import yaml

from sandcheck.clusters.backends.base import RUN_LABEL, PodSpec
from sandcheck.clusters.backends.kube import (
    exit_code_from_status,
    namespace_for,
    phase_times,
    pod_manifest,
)
from sandcheck.clusters.backends.local.cluster import (
    KUBELET_SYSCTLS,
    CertRequest,
    Pki,
    hosts_file,
    kubeconfig,
    kubelet_config,
    namespace_script,
    openssl_config,
)
from sandcheck.clusters.catalog import Catalog


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load(None)


def test_openssl_config_leaf_has_subject_sans_and_usage():
    text = openssl_config(CertRequest("kubelet", "system:node:n1", organizations=("system:nodes",),
                                      dns=("n1", "localhost"), ips=("127.0.0.1",),
                                      server=True, client=True))
    assert "0.O = system:nodes" in text
    assert "CN = system:node:n1" in text
    assert "extendedKeyUsage = serverAuth,clientAuth" in text
    assert "CA:FALSE" in text
    assert "DNS.1 = n1" in text and "DNS.2 = localhost" in text
    assert "IP.1 = 127.0.0.1" in text


def test_openssl_config_ca_and_plain_client():
    ca = openssl_config(CertRequest("ca", "sandcheck-ca", ca=True))
    assert "CA:TRUE" in ca and "keyCertSign" in ca and "subjectAltName" not in ca
    client = openssl_config(CertRequest("admin", "admin", organizations=("system:masters",),
                                        client=True))
    assert "extendedKeyUsage = clientAuth" in client and "subjectAltName" not in client


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")
def test_pki_issues_certs_the_ca_verifies(tmp_path):
    pki = Pki(tmp_path / "pki")
    ca = pki.make_ca()
    crt, key = pki.issue(CertRequest("admin", "sandcheck-admin",
                                     organizations=("system:masters",), client=True))
    srv, _ = pki.issue(CertRequest("apiserver", "kube-apiserver", server=True,
                                   dns=("kubernetes",), ips=("127.0.0.1",)))
    for cert in (crt, srv):
        out = subprocess.run(["openssl", "verify", "-CAfile", str(ca), str(cert)],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
    subject = subprocess.run(["openssl", "x509", "-noout", "-subject", "-in", str(crt)],
                             capture_output=True, text=True, timeout=30).stdout
    assert "O = system:masters" in subject and "CN = sandcheck-admin" in subject
    text = subprocess.run(["openssl", "x509", "-noout", "-text", "-in", str(srv)],
                          capture_output=True, text=True, timeout=30).stdout
    assert "IP Address:127.0.0.1" in text and "DNS:kubernetes" in text
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    sa_key, sa_pub = pki.service_account_keys()
    assert "PUBLIC KEY" in sa_pub.read_text()


def test_kubeconfig_names_the_files_and_loads(tmp_path):
    files = {n: tmp_path / n for n in ("ca.crt", "a.crt", "a.key")}
    for f in files.values():
        f.write_text("x")
    doc = kubeconfig("https://127.0.0.1:6443", files["ca.crt"], files["a.crt"],
                     files["a.key"], "sandcheck-admin")
    path = tmp_path / "kc"
    path.write_text(yaml.safe_dump(doc))
    loaded = yaml.safe_load(path.read_text())
    assert loaded["current-context"] == "sandcheck-local"
    assert loaded["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"
    assert loaded["users"][0]["user"]["client-key"] == str(files["a.key"])


def test_kubelet_config_stays_in_the_work_dir(tmp_path):
    cfg = kubelet_config(port=1, healthz_port=2, ca=tmp_path / "ca", cert=tmp_path / "c",
                         key=tmp_path / "k", cgroup_root="/sandcheck-x",
                         resolv_conf=tmp_path / "resolv", pod_logs=tmp_path / "pod-logs",
                         plugins=tmp_path / "plugins", endpoint="unix:///x.sock")
    assert cfg["cgroupDriver"] == "cgroupfs"
    assert cfg["failSwapOn"] is False
    assert cfg["address"] == "127.0.0.1" and cfg["healthzBindAddress"] == "127.0.0.1"
    assert cfg["imageGCHighThresholdPercent"] == 100
    assert cfg["makeIPTablesUtilChains"] is False
    assert cfg["cgroupRoot"] == "/sandcheck-x"
    assert "staticPodPath" not in cfg
    text = json.dumps(cfg)
    assert "/var/lib/kubelet" not in text and "/var/log/pods" not in text


def test_namespace_script_hides_sysctls_and_execs():
    binds = [(f"/w/{k.replace('/', '.')}", f"/proc/sys/{k}") for k in KUBELET_SYSCTLS]
    script = namespace_script(binds, "/proc")
    lines = script.splitlines()
    assert lines[0] == "set -e"
    assert lines[1] == "mount --make-rprivate /proc"
    assert lines[-1] == 'exec "$@"'
    assert "mount --bind /w/kernel.panic_on_oops /proc/sys/kernel/panic_on_oops" in lines


def test_hosts_file_appends_the_node_name():
    text = hosts_file("127.0.0.1 localhost", ("sandcheck-node",))
    assert text.splitlines() == ["127.0.0.1 localhost", "127.0.0.1 sandcheck-node"]


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


def test_phase_times_from_pod_timestamps():
    pod = {
        "metadata": {"creationTimestamp": "2026-11-25T10:00:00Z"},
        "status": {
            "conditions": [
                {"type": "PodScheduled", "lastTransitionTime": "2026-11-25T10:00:01Z"},
                {"type": "Initialized", "lastTransitionTime": "2026-11-25T10:00:01Z"},
                {"type": "ContainersReady", "lastTransitionTime": "2026-11-25T10:00:04Z"},
            ],
            "containerStatuses": [{"state": {"running": {"startedAt": "2026-11-25T10:00:03Z"}}}],
        },
    }
    times = phase_times(pod, wall_seconds=4.25)
    assert times.phases == {"created_to_scheduled_seconds": 1.0,
                            "scheduled_to_initialized_seconds": 0.0,
                            "initialized_to_started_seconds": 2.0,
                            "started_to_ready_seconds": 1.0}
    assert times.total() == 4.25
    assert times.timestamps["started"].startswith("2026-11-25T10:00:03")


def test_namespace_for_is_a_dns_label():
    ns = namespace_for("20261125144835-615a85")
    assert ns == "sandcheck-20261125144835-615a85"
    assert len(namespace_for("x" * 80)) <= 63
