"""The probe image on real clusters: references, docker-config credentials, and
``sandcheck push-image`` against a real CNCF Distribution registry on the loopback address
(built by ``sandcheck provision --registry``), started and stopped by these tests.

The pure parts (references, credentials, the access-log reading of the kind registry) use
made-up input; every push goes to the real registry, whose API then shows what it stored.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from sandcheck.clusters.base import new_run_id
from sandcheck.clusters.kind.registry import hosts_toml, pulls_by_client
from sandcheck.errors import UserError
from sandcheck.host import runcgroups
from sandcheck.oci.credentials import credentials_for
from sandcheck.oci.reference import Target, is_loopback, parse_target

ROOT = Path(__file__).resolve().parent.parent


# -- references and credentials (pure) -------------------------------------------------------

@pytest.mark.parametrize("text, want", [
    ("localhost:5000", Target("localhost:5000", "sandcheck/probe")),
    ("registry.example.com/team/probe:v1", Target("registry.example.com", "team/probe", "v1")),
    ("127.0.0.1:5001/a/b", Target("127.0.0.1:5001", "a/b")),
    ("[::1]:5000/x:7", Target("[::1]:5000", "x", "7")),
])
def test_targets_parse(text, want):
    assert parse_target(text) == want


@pytest.mark.parametrize("text, says", [
    ("sandcheck/probe", "name the registry first"),
    ("localhost:5000/Bad", "not a valid repository"),
    ("localhost:5000/x@sha256:00", "not a digest"),
    ("localhost:5000/x:b@d", "not a digest"),
])
def test_bad_targets_say_what_to_write(text, says):
    with pytest.raises(UserError, match=says):
        parse_target(text)


def test_loopback_hosts_get_plain_http():
    assert all(is_loopback(h) for h in ("localhost:5000", "127.0.0.1:1", "[::1]:5", "::1",
                                        "127.1.2.3"))
    assert not any(is_loopback(h) for h in ("registry.example.com", "10.0.0.1:5000",
                                            "localhost.example.com:5000"))


def write_config(tmp_path: Path, config: dict) -> Path:
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path / "config.json"


def test_credentials_from_auths_in_the_spellings_docker_uses(tmp_path):
    auth = base64.b64encode(b"alice:s3:cret").decode()
    path = write_config(tmp_path, {"auths": {"https://r.example.com": {"auth": auth},
                                             "other:5000": {"username": "bob",
                                                            "password": "pw"}}})
    got = credentials_for("r.example.com", path)
    assert (got.username, got.password) == ("alice", "s3:cret")
    assert "auths['https://r.example.com']" in got.source
    assert credentials_for("other:5000", path).username == "bob"
    assert credentials_for("nowhere", path) is None
    assert credentials_for("x", tmp_path / "absent.json") is None


def test_credential_helper_is_asked_and_a_missing_one_named(tmp_path, monkeypatch):
    helper = tmp_path / "docker-credential-fake"
    helper.write_text('#!/bin/sh\nread host\n[ "$1" = get ] && '
                      'echo "{\\"Username\\":\\"u-$host\\",\\"Secret\\":\\"s\\"}"\n')
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    path = write_config(tmp_path, {"credHelpers": {"r.example.com": "fake"},
                                   "credsStore": "absent"})
    assert credentials_for("r.example.com", path).username == "u-r.example.com"
    with pytest.raises(UserError, match="docker-credential-absent is not on PATH"):
        credentials_for("other.example.com", path)


def test_kind_registry_reads_pulls_per_client_and_writes_hosts_toml():
    log = "\n".join([
        '172.18.0.3 - - [26/Nov/2026:00:19:01 +0000] "GET /v2/sandcheck/probe/manifests/t '
        'HTTP/1.1" 200 911 "" "containerd/v1.7.35"',
        '172.18.0.3 - - [26/Nov/2026:00:19:01 +0000] "HEAD /v2/sandcheck/probe/manifests/t '
        'HTTP/1.1" 200 911 "" "containerd/v1.7.35"',
        '172.18.0.4 - - [26/Nov/2026:00:19:02 +0000] "GET /v2/sandcheck/probe/blobs/sha256:a '
        'HTTP/1.1" 200 5 "" "containerd/v1.7.35"',
        '172.18.0.5 - - [26/Nov/2026:00:19:02 +0000] "GET /v2/x/manifests/t HTTP/1.1" 404 5 '
        '"" "containerd"',
        'time="..." level=info msg="response completed"',
    ])
    assert pulls_by_client(log) == {"172.18.0.3": 2}
    toml = hosts_toml("localhost:5001", "http://172.18.0.9:5000")
    import tomllib
    parsed = tomllib.loads(toml)
    assert parsed["server"] == "http://localhost:5001"
    assert parsed["host"]["http://172.18.0.9:5000"]["capabilities"] == ["pull", "resolve"]


# -- against a real registry ------------------------------------------------------------------

def _registry_ready() -> str | None:
    if os.geteuid() != 0:
        return "needs root (the registry runs in the run's cgroup tree)"
    from sandcheck.provision.tools import REGISTRY

    if not REGISTRY.binaries()["registry"].is_file():
        return "needs CNCF Distribution's registry: run `sandcheck provision --registry`"
    return None


needs_registry = pytest.mark.skipif(_registry_ready() is not None,
                                    reason=_registry_ready() or "")


@pytest.fixture(scope="module")
def probe_image():
    from sandcheck.fixtures.image import build_probe_image
    from sandcheck.provision.paths import cache_dir

    return build_probe_image(cache_dir() / "probe")


def push_image(*args: str, docker_config: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if docker_config is not None:
        env["DOCKER_CONFIG"] = str(docker_config)
    return subprocess.run([sys.executable, "-m", "sandcheck.cli.main", "push-image", *args],
                          capture_output=True, text=True, env=env, timeout=600)


def manifest_digest(host: str, repo: str, tag: str, auth: str | None = None) -> str:
    req = urllib.request.Request(f"http://{host}/v2/{repo}/manifests/{tag}", method="HEAD",
                                 headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    if auth:
        req.add_header("Authorization", f"Basic {base64.b64encode(auth.encode()).decode()}")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.headers["Docker-Content-Digest"]


@needs_registry
@pytest.mark.integration
def test_push_image_stores_the_probe_byte_for_byte_and_leaves_nothing(probe_image, tmp_path):
    from sandcheck.oci.distribution import LoopbackRegistry

    reg = LoopbackRegistry(new_run_id())
    with reg:
        proc = push_image(f"{reg.host}/team/probe", docker_config=tmp_path)
        assert proc.returncode == 0, proc.stderr
        tag = probe_image.ref.rsplit(":", 1)[1]
        assert proc.stdout.strip() == f"{reg.host}/team/probe:{tag}"
        assert "2 blobs uploaded, 0 already there" in proc.stderr
        assert f"--image {reg.host}/team/probe:{tag}" in proc.stderr
        # the registry's digest of what it stored is the archive's manifest digest
        assert manifest_digest(reg.host, "team/probe", tag) == probe_image.digest
        again = push_image(f"{reg.host}/team/probe:again", docker_config=tmp_path)
        assert again.returncode == 0 and "0 blobs uploaded, 2 already there" in again.stderr
        assert manifest_digest(reg.host, "team/probe", "again") == probe_image.digest
        assert any("PUT /v2/team/probe/manifests/" in line for line in reg.requests())
        port = reg.port
    assert not reg.workdir.exists()
    assert runcgroups.cgroups_of_run(reg.run_id) == []
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=5)


@needs_registry
@pytest.mark.integration
def test_push_image_logs_in_from_the_docker_config(probe_image, tmp_path):
    import bcrypt

    from sandcheck.oci.distribution import LoopbackRegistry

    entry = bcrypt.hashpw(b"pw-of-alice", bcrypt.gensalt(rounds=5)).decode()
    with LoopbackRegistry(new_run_id(), htpasswd=f"alice:{entry}\n") as reg:
        none = push_image(reg.host, docker_config=tmp_path)
        assert none.returncode == 2
        assert f"run `docker login {reg.host}`" in none.stderr
        wrong = base64.b64encode(b"alice:nope").decode()
        write_config(tmp_path, {"auths": {reg.host: {"auth": wrong}}})
        refused = push_image(reg.host, docker_config=tmp_path)
        assert refused.returncode != 0 and "401" in refused.stderr
        right = base64.b64encode(b"alice:pw-of-alice").decode()
        write_config(tmp_path, {"auths": {reg.host: {"auth": right}}})
        ok = push_image(reg.host, docker_config=tmp_path)
        assert ok.returncode == 0, ok.stderr
        tag = probe_image.ref.rsplit(":", 1)[1]
        assert manifest_digest(reg.host, "sandcheck/probe", tag,
                               auth="alice:pw-of-alice") == probe_image.digest


def test_image_option_needs_a_kubernetes_backend_and_one_source():
    def collect(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pytest", str(ROOT / "suites" / "isolation"),
                               *args, "--collect-only", "-q", "-p", "no:cacheprovider"],
                              capture_output=True, text=True, cwd=ROOT, timeout=120,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})

    node = collect("--backend", "node", "--image", "localhost:5000/sandcheck/probe:x")
    assert node.returncode != 0
    assert "--image applies to Kubernetes backends" in node.stdout + node.stderr
    both = collect("--backend", "kind", "--kind-registry", "--image", "r.example.com/p:1")
    assert both.returncode != 0 and "both choose the pods' image" in both.stdout + both.stderr
    reuse = collect("--backend", "kind", "--kind-registry", "--kind-cluster", "c")
    assert reuse.returncode != 0 and "push the image with `sandcheck push-image`" in \
        reuse.stdout + reuse.stderr


@needs_registry
@pytest.mark.integration
@pytest.mark.full  # .ci/run's kind certification pulls through --kind-registry the same way
def test_image_option_makes_a_local_cluster_pull_from_the_registry(probe_image, tmp_path,
                                                                   run_suite):
    """--image on the local backend: pods name the pushed reference with IfNotPresent and
    the node's containerd pulls it from the loopback registry."""
    from sandcheck.clusters import registry
    from sandcheck.oci.distribution import LoopbackRegistry

    why = registry.entry("local").unavailable()
    if why:
        pytest.skip(f"the local backend cannot run here: {why}")
    with LoopbackRegistry(new_run_id()) as reg:
        pushed = push_image(f"{reg.host}/sandcheck/probe:pulled", docker_config=tmp_path)
        assert pushed.returncode == 0, pushed.stderr
        ref = pushed.stdout.strip()
        proc, checks = run_suite("suites/isolation", "-k", "kernel_identity", "--backend",
                                 "local", "--runtimes", "runc", "--image", ref)
        pulls = [line for line in reg.requests() if "/manifests/pulled" in line
                 and "containerd" in line]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    env = json.loads((tmp_path / "report" / "results.json").read_text())["environment"]
    assert (env["probe_image"], env["image_pull_policy"]) == (ref, "IfNotPresent")
    assert pulls, "the node's containerd never asked the registry for the image"
    assert [c["status"] for c in checks.values()] == ["passed"]
