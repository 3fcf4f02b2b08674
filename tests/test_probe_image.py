"""The probe image: a reproducible offline build, an archive whose every digest and size
holds, the probe's JSON contract, and a real import and run in the node backend's own
private containerd (runc)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import signal
import subprocess
import tarfile
from pathlib import Path

import pytest
from helpers import skip_unless_node_backend

from sandcheck.containerd.images import (
    ProbeImage,
    ProbeImageError,
    import_into_containerd,
)
from sandcheck.errors import UserError
from sandcheck.fixtures import image as image_mod
from sandcheck.fixtures.image import build_probe_image
from sandcheck.timeouts import wait_until

TOP_KEYS = {
    "uname", "proc_version", "dmesg", "dmesg_errno", "caps", "seccomp", "no_new_privs",
    "namespaces", "pids", "pid", "ppid", "uid", "gid", "readable", "kallsyms_nonzero",
    "mounts", "cgroup", "devices", "hostname", "syscalls", "errors",
}
"""What the suites read from the probe's document (suites/isolation)."""
SYSCALLS = {
    "keyctl", "add_key", "bpf", "perf_event_open", "init_module", "kexec_load",
    "ptrace_attach", "userfaultfd", "io_uring_setup", "unshare_user", "mount", "reboot",
    "syslog", "open_by_handle_at",
}
NAMESPACES = {"pid", "net", "mnt", "uts", "ipc", "user", "cgroup", "time"}


@pytest.fixture(scope="module")
def probe_image(tmp_path_factory) -> ProbeImage:
    return build_probe_image(tmp_path_factory.mktemp("probe-cache"))


def check_probe_document(doc: dict) -> None:
    """The contract the suites rely on, for the host run and the in-container run alike:
    consistent types, and errno only where a call failed."""
    assert TOP_KEYS <= doc.keys(), TOP_KEYS - doc.keys()
    assert set(doc["uname"]) == {"sysname", "nodename", "release", "version", "machine"}
    assert doc["uname"]["sysname"] == "Linux"
    assert set(doc["caps"]) == {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"}
    for v in doc["caps"].values():
        int(v, 16)
    assert set(doc["namespaces"]) == NAMESPACES
    assert all(isinstance(v, bool) for v in doc["readable"].values())
    assert doc["pids"] == sorted(doc["pids"]) and doc["pid"] in doc["pids"]
    assert SYSCALLS <= doc["syscalls"].keys(), SYSCALLS - doc["syscalls"].keys()
    for name, res in doc["syscalls"].items():
        assert isinstance(res["ret"], int), name
        assert res["errno"] is None or res["errno"].startswith("E"), name
        assert (res["errno"] is None) == (res["ret"] >= 0), name
    assert doc["dmesg_errno"] == 0 or doc["dmesg_errno"].startswith("E")
    assert isinstance(doc["dmesg"], list) and len(doc["dmesg"]) <= 20
    assert 0 < len(doc["mounts"]) <= 200
    assert all(set(m) == {"source", "target", "fstype"} for m in doc["mounts"])
    assert doc["devices"] == sorted(doc["devices"])
    assert doc["errors"] == [], doc["errors"]


# --------------------------------------------------------------------------
# the archive


def test_build_is_deterministic(tmp_path, probe_image):
    again = build_probe_image(probe_image.archive.parent)
    fresh = build_probe_image(tmp_path / "other-cache")  # compiles from scratch
    assert again.digest == fresh.digest == probe_image.digest
    assert again.ref == fresh.ref == probe_image.ref
    assert fresh.archive.read_bytes() == probe_image.archive.read_bytes()
    assert again.probe_binary == probe_image.probe_binary  # cache reused


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _blob(files: dict[str, bytes], digest: str) -> bytes:
    return files["blobs/sha256/" + digest.split(":", 1)[1]]


def test_archive_is_a_consistent_oci_layout_and_docker_archive(probe_image):
    """Every blob's name is its digest, every descriptor's size and digest hold, the OCI
    index and the docker manifest name the same refs, config and layer: what
    ``ctr images import`` verifies on a real node."""
    with tarfile.open(probe_image.archive) as tar:
        members = tar.getmembers()
        files = {m.name: tar.extractfile(m).read() for m in members if m.isfile()}
    assert [m.name for m in members] == sorted(m.name for m in members)
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in members)
    for name, data in files.items():
        if name.startswith("blobs/sha256/"):
            assert _sha(data) == "sha256:" + name.rsplit("/", 1)[1], name

    index = json.loads(files["index.json"])
    names = [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]
    assert names == list(probe_image.refs)
    assert {m["digest"] for m in index["manifests"]} == {probe_image.digest}
    tag = probe_image.ref.rsplit(":", 1)[1]
    assert probe_image.digest.startswith("sha256:" + tag), "the tag is not the digest's"

    manifest = json.loads(_blob(files, probe_image.digest))
    config_raw = _blob(files, manifest["config"]["digest"])
    assert len(config_raw) == manifest["config"]["size"]
    config = json.loads(config_raw)
    (layer_desc,) = manifest["layers"]
    layer_gz = _blob(files, layer_desc["digest"])
    assert len(layer_gz) == layer_desc["size"]
    layer = gzip.decompress(layer_gz)
    assert config["rootfs"] == {"type": "layers", "diff_ids": [_sha(layer)]}

    docker = json.loads(files["manifest.json"])
    assert docker[0]["RepoTags"] == list(probe_image.refs)
    assert docker[0]["Config"] == "blobs/sha256/" + manifest["config"]["digest"].split(":")[1]
    assert docker[0]["Layers"] == ["blobs/sha256/" + layer_desc["digest"].split(":")[1]]

    with tarfile.open(fileobj=io.BytesIO(layer)) as lt:
        entries = {m.name.rstrip("/"): m for m in lt.getmembers()}
    entrypoint = config["config"]["Entrypoint"][0].lstrip("/")
    assert entries[entrypoint].isfile() and entries[entrypoint].mode & 0o111
    assert entries[entrypoint].size == probe_image.probe_binary.stat().st_size
    links = [m for m in entries.values() if m.issym()]
    assert links, "no busybox applets in the layer"
    for link in links:  # every applet resolves inside the image
        assert f"bin/{link.linkname}" in entries or link.linkname.lstrip("/") in entries, link


def test_missing_tools_end_in_a_user_error_naming_the_package(monkeypatch, tmp_path):
    monkeypatch.setattr(image_mod, "BUSYBOX_PATH", tmp_path / "no-busybox")
    with pytest.raises(UserError, match="busybox-static"):
        build_probe_image(tmp_path / "cache")
    monkeypatch.undo()
    monkeypatch.setattr(image_mod.shutil, "which", lambda name: None)
    with pytest.raises(UserError, match="gcc"):
        build_probe_image(tmp_path / "cache")


def test_import_failure_carries_ctr_stderr(probe_image, tmp_path):
    fake_ctr = tmp_path / "ctr"
    fake_ctr.write_text('#!/bin/sh\necho "ctr said: $*" >&2\nexit 3\n')
    fake_ctr.chmod(0o755)
    with pytest.raises(ProbeImageError, match="exit 3") as err:
        import_into_containerd(probe_image, "/run/x.sock", namespace="ns1", ctr=str(fake_ctr))
    assert "ctr said: --address /run/x.sock -n ns1 images import" in str(err.value)
    assert str(probe_image.archive) in str(err.value)
    with pytest.raises(ProbeImageError, match="not found"):
        import_into_containerd(probe_image, "/run/x.sock", ctr=str(tmp_path / "missing-ctr"))


# --------------------------------------------------------------------------
# the probe binary on the host


def test_probe_runs_on_host(probe_image):
    for argv in ([str(probe_image.probe_binary)], [str(probe_image.probe_binary), "json"]):
        proc = subprocess.run(argv, capture_output=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(proc.stdout)
        check_probe_document(doc)
    assert doc["uname"]["release"] == os.uname().release
    assert doc["pid"] != 1 and 1 in doc["pids"]
    assert doc["hostname"] == os.uname().nodename
    assert doc["uid"] == os.getuid()


def _catches_sigterm(pid: int) -> bool | None:
    status = Path(f"/proc/{pid}/status").read_text()
    caught = next(int(line.split()[1], 16) for line in status.splitlines()
                  if line.startswith("SigCgt:"))
    return True if caught >> (signal.SIGTERM - 1) & 1 else None


def test_probe_sleep_mode_stops_on_sigterm(probe_image):
    """PID 1 of every probe pod: it must exit 0 on SIGTERM (a pod's stop), not linger."""
    proc = subprocess.Popen([str(probe_image.probe_binary), "sleep"])
    try:
        wait_until(lambda: _catches_sigterm(proc.pid), 10, "probe sleep to handle SIGTERM")
        assert proc.poll() is None, "probe sleep exited on its own"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_probe_rejects_unknown_mode(probe_image):
    proc = subprocess.run([str(probe_image.probe_binary), "bogus"], capture_output=True,
                          timeout=30)
    assert proc.returncode == 2 and b"usage" in proc.stderr


# --------------------------------------------------------------------------
# import and run in the node backend's private containerd


@pytest.fixture(scope="module")
def node_backend(probe_image):
    skip_unless_node_backend()
    from sandcheck.catalog import Catalog
    from sandcheck.clusters.base import new_run_id
    from sandcheck.clusters.node import NodeBackend

    backend = NodeBackend(Catalog.load().select("runc"), new_run_id(), probe_image)
    try:
        backend.start()  # imports the archive with ctr into CRI's namespace
        yield backend
    finally:
        backend.stop()


@pytest.mark.integration
def test_imported_image_runs_under_runc(node_backend, probe_image):
    from sandcheck.clusters.base import PodSpec

    images = json.loads(node_backend.crictl("images", "-o", "json").stdout)["images"]
    ids = {img["id"] for img in images
           if set(probe_image.refs) & set(img.get("repoTags") or ())}
    assert len(ids) == 1, f"the refs {probe_image.refs} name {len(ids)} images: {images}"
    (image,) = [img for img in images if img["id"] in ids]
    assert set(probe_image.refs) <= set(image["repoTags"]), image

    (runc,) = node_backend.runtimes
    pod = node_backend.create_pod(PodSpec(runtime=runc, name_prefix="probe-image"))
    try:
        result = pod.exec(["/probe", "json"])
        assert result.exit_code == 0, f"{result.stderr}\n{pod.diagnostics()}"
        doc = json.loads(result.stdout)
        check_probe_document(doc)
        assert doc["uname"]["release"] == os.uname().release  # runc shares the host kernel
        assert doc["namespaces"]["pid"] != os.readlink("/proc/self/ns/pid")
        assert 1 in doc["pids"] and doc["pid"] != 1  # exec joins the pod's pid namespace
        assert any(m["target"] == "/" and m["fstype"] == "overlay" for m in doc["mounts"])
        uname = pod.exec(["/bin/uname", "-r"])  # a busybox applet of the image
        assert uname.exit_code == 0 and uname.stdout.strip() == os.uname().release
        pids = node_backend.host_pids(pod)
        assert pids, "no host process names the pod's sandbox"
    finally:
        node_backend.delete_pod(pod)
    wait_until(lambda: not any(Path(f"/proc/{p}").exists() for p in pids) or None, 30,
               "the deleted pod's host processes to exit",
               state=lambda: f"still running: {[p for p in pids if Path(f'/proc/{p}').exists()]}")
