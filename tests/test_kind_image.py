"""The offline kind node image: `kind create cluster` with it reaches Ready (one control
plane; one control plane and a worker) on a private dockerd, a runc pod of the probe image
runs and execs, and deleting the cluster and stopping the engine leave nothing behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import tomlkit

from sandcheck.clusters.dockerd.daemon import PrivateDockerd
from sandcheck.fixtures.image import build_probe_image
from sandcheck.host.mounts import mounts_under
from sandcheck.host.state import HostState
from sandcheck.host.workdir import WORK_BASE, claim
from sandcheck.provision.gobuild import build
from sandcheck.provision.kindnode import build_node_image, load_node_image, nodefiles
from sandcheck.provision.kindnode.clusterconfig import cluster_config, render
from sandcheck.provision.kindnode.rootfs import debian_mirror
from sandcheck.provision.paths import cache_dir, path_dir
from sandcheck.provision.tools import KIND

needs_docker_and_debootstrap = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("dockerd") is None or shutil.which("debootstrap") is None,
    reason="needs root, docker.io and debootstrap: run `sandcheck provision --kind` as root")
DEBIAN_CLI_DIR = "/usr/bin"
"""Debian's docker 20.10 CLI, put before any newer CLI on PATH for kind."""
READY_TIMEOUT = "240s"


@pytest.fixture(scope="module")
def node_image() -> Path:
    return build_node_image()


@pytest.fixture(scope="module")
def kind_binary() -> str:
    return str(build(KIND)["kind"])


@pytest.fixture
def dockerd():
    run_id = uuid.uuid4().hex[:8]
    workdir = WORK_BASE / f"kind-{run_id}"
    claim(workdir)
    daemon = PrivateDockerd(workdir, run_id, privileged_wrapper=True)
    daemon.start()
    yield daemon
    left = daemon.stop()
    # Other runs on this machine add and remove links of their own: only settings, and
    # bridges like the one of kind's docker network, count against this one.
    ours = [line for line in left if line.startswith(("sysctl", "new link br-"))]
    assert ours == [], f"host changed by the run: {left}"
    assert not workdir.exists(), f"{workdir} left behind"
    assert not mounts_under(str(workdir)), f"mounts left under {workdir}"


def kind_env(daemon: PrivateDockerd) -> dict[str, str]:
    env = daemon.env()
    env["PATH"] = os.pathsep.join([DEBIAN_CLI_DIR, str(path_dir()), env["PATH"]])
    return env


def run(argv: list[str], env: dict[str, str], timeout: float = 600) -> str:
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(argv)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_node_files_keep_kind_config_schema_2_and_add_sandcheck_settings():
    kind_config = (
        'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd]\n'
        '  snapshotter = "overlayfs"\n[plugins."io.containerd.grpc.v1.cri"]\n'
        '  sandbox_image = "registry.k8s.io/pause:3.10"\n  restrict_oom_score_adj = false\n')
    doc = tomlkit.parse(nodefiles.containerd_config(kind_config)).unwrap()
    cri = doc["plugins"]["io.containerd.grpc.v1.cri"]
    assert doc["version"] == 2 and cri["containerd"]["snapshotter"] == "overlayfs"
    assert cri["restrict_oom_score_adj"] is True
    assert cri["cni"]["conf_template"] == nodefiles.CNI_TEMPLATE_PATH
    spec = nodefiles.cri_base_spec({"process": {"rlimits": [{"type": "RLIMIT_NOFILE"}]}})
    assert "rlimits" not in spec["process"]
    assert spec["hooks"]["createContainer"] == [{"path": nodefiles.CRI_BASE_HOOK}]


def test_debian_mirror_read_from_apt_sources(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\n")
    assert debian_mirror(tmp_path) == "http://mirror.example/debian"
    assert debian_mirror(tmp_path / "none") == "http://deb.debian.org/debian"


def test_cluster_config_leaves_out_what_the_image_does_not_hold():
    config = json.loads(render(cluster_config(workers=2)))
    assert [n["role"] for n in config["nodes"]] == ["control-plane", "worker", "worker"]
    assert config["networking"] == {"disableDefaultCNI": True, "kubeProxyMode": "none"}
    init = json.loads(config["kubeadmConfigPatches"][0])
    assert {"preflight", "addon/coredns", "addon/kube-proxy"} <= set(init["skipPhases"])


@pytest.mark.integration
@pytest.mark.full  # the kind backend's tests and .ci/run's certification boot the same image
@needs_docker_and_debootstrap
@pytest.mark.parametrize("workers", [0, 1], ids=["control-plane", "with-worker"])
def test_kind_cluster_from_offline_node_image(node_image, kind_binary, dockerd, workers,
                                              tmp_path, capsys):
    env = kind_env(dockerd)
    start = time.monotonic()
    ref = load_node_image(dockerd)
    loaded = time.monotonic() - start
    name = f"sandcheck-{dockerd.run_id}"
    config = tmp_path / "kind.json"
    config.write_text(render(cluster_config(workers)))
    kubeconfig = tmp_path / "kubeconfig"
    kind = [kind_binary]
    kubectl = [str(path_dir() / "kubectl"), "--kubeconfig", str(kubeconfig)]
    host_before = HostState.read()
    start = time.monotonic()
    try:
        run([*kind, "create", "cluster", "--name", name, "--image", ref, "--config",
             str(config), "--kubeconfig", str(kubeconfig), "--wait", READY_TIMEOUT], env)
        run([*kubectl, "wait", "--for=condition=Ready", "node", "--all",
             f"--timeout={READY_TIMEOUT}"], env)
        ready = time.monotonic() - start
        nodes = json.loads(run([*kubectl, "get", "nodes", "-o", "json"], env))["items"]
        assert len(nodes) == 1 + workers

        probe = build_probe_image(cache_dir() / "probe")
        run([*kind, "load", "image-archive", str(probe.archive), "--name", name], env)
        run([*kubectl, "run", "probe", f"--image={probe.alias}", "--image-pull-policy=Never",
             "--restart=Never", "--", "sleep"], env)
        run([*kubectl, "wait", "--for=condition=Ready", "pod/probe", "--timeout=180s"], env)
        facts = json.loads(run([*kubectl, "exec", "probe", "--", "/probe", "json"], env))
        assert facts, "the probe printed nothing"
        pod = json.loads(run([*kubectl, "get", "pod", "probe", "-o", "json"], env))
        if workers:
            assert pod["spec"]["nodeName"].endswith("worker")
        # kubelet's tunables and systemd's fs.file-max, written while the nodes run
        changed = [line for line in host_before.differences() if line.startswith("sysctl")]
        assert changed == [], f"running nodes changed host kernel settings: {changed}"
        with capsys.disabled():
            print(f"\nkind node image: docker load {loaded:.1f}s, create cluster to all "
                  f"{1 + workers} node(s) Ready {ready:.1f}s")
    finally:
        subprocess.run([*kind, "delete", "cluster", "--name", name], env=env,
                       capture_output=True, timeout=300)
    assert run([*kind, "get", "clusters"], env).strip() == ""
    assert dockerd.docker("ps", "-aq").stdout.strip() == ""
