"""The probe image: reproducible offline build, the probe's JSON contract, and
a real import + run in a private containerd with runc."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from sandcheck.fixtures import image as image_mod
from sandcheck.fixtures.image import (
    ProbeImage,
    ProbeImageError,
    build_probe_image,
    import_into_containerd,
)

TOP_KEYS = {
    "uname",
    "proc_version",
    "dmesg",
    "dmesg_errno",
    "caps",
    "seccomp",
    "no_new_privs",
    "namespaces",
    "pids",
    "pid",
    "ppid",
    "uid",
    "gid",
    "readable",
    "kallsyms_nonzero",
    "mounts",
    "cgroup",
    "devices",
    "hostname",
    "syscalls",
    "errors",
}
SYSCALLS = {
    "keyctl",
    "add_key",
    "bpf",
    "perf_event_open",
    "init_module",
    "kexec_load",
    "ptrace_attach",
    "userfaultfd",
    "io_uring_setup",
    "unshare_user",
    "mount",
    "reboot",
    "syslog",
    "open_by_handle_at",
}
READABLE = {
    "/proc/kallsyms",
    "/dev/kmsg",
    "/proc/kcore",
    "/sys/kernel/debug",
    "/dev/mem",
    "/proc/sysrq-trigger",
}
NAMESPACES = {"pid", "net", "mnt", "uts", "ipc", "user", "cgroup", "time"}


@pytest.fixture(scope="module")
def probe_image(tmp_path_factory) -> ProbeImage:
    return build_probe_image(tmp_path_factory.mktemp("probe-cache"))


def check_probe_document(doc: dict) -> None:
    """Shape checks shared by the host run and the in-container run."""
    assert TOP_KEYS <= doc.keys(), TOP_KEYS - doc.keys()
    assert set(doc["uname"]) == {"sysname", "nodename", "release", "version", "machine"}
    assert doc["uname"]["sysname"] == "Linux"
    assert set(doc["caps"]) == {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"}
    for v in doc["caps"].values():
        int(v, 16)
    assert set(doc["namespaces"]) == NAMESPACES
    assert set(doc["readable"]) == READABLE
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
# pure checks on the archive


def test_build_is_deterministic(tmp_path, probe_image):
    again = build_probe_image(probe_image.archive.parent)
    fresh = build_probe_image(tmp_path / "other-cache")  # compiles from scratch
    assert again.digest == fresh.digest == probe_image.digest
    assert again.ref == fresh.ref == probe_image.ref
    assert fresh.archive.read_bytes() == probe_image.archive.read_bytes()
    assert again.probe_binary == probe_image.probe_binary  # cache reused


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_archive_structure(probe_image):
    tag = probe_image.ref.rsplit(":", 1)[1]
    assert probe_image.ref == f"localhost/sandcheck/probe:{tag}"
    assert probe_image.alias == "localhost/sandcheck/probe:latest"
    assert probe_image.digest.startswith("sha256:" + tag)

    with tarfile.open(probe_image.archive) as tar:
        members = tar.getmembers()
        files = {m.name: tar.extractfile(m).read() for m in members if m.isfile()}
    assert [m.name for m in members] == sorted(m.name for m in members)
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in members)
    assert {"oci-layout", "index.json", "manifest.json", "repositories"} <= files.keys()
    for name, data in files.items():
        if name.startswith("blobs/sha256/"):
            assert _sha(data) == "sha256:" + name.rsplit("/", 1)[1]

    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(files["index.json"])
    names = [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]
    assert names == [probe_image.ref, probe_image.alias]
    assert {m["digest"] for m in index["manifests"]} == {probe_image.digest}

    manifest = json.loads(files["blobs/sha256/" + probe_image.digest.split(":")[1]])
    assert manifest["schemaVersion"] == 2
    config_raw = files["blobs/sha256/" + manifest["config"]["digest"].split(":")[1]]
    assert len(config_raw) == manifest["config"]["size"]
    config = json.loads(config_raw)
    assert config["architecture"] == "amd64" and config["os"] == "linux"
    assert config["config"]["Entrypoint"] == ["/probe"]
    assert config["config"]["Cmd"] == ["sleep"]
    (layer_desc,) = manifest["layers"]
    layer_gz = files["blobs/sha256/" + layer_desc["digest"].split(":")[1]]
    assert len(layer_gz) == layer_desc["size"]
    layer = gzip.decompress(layer_gz)
    assert config["rootfs"] == {"type": "layers", "diff_ids": [_sha(layer)]}

    docker = json.loads(files["manifest.json"])
    assert docker[0]["RepoTags"] == [probe_image.ref, probe_image.alias]
    assert docker[0]["Config"] == "blobs/sha256/" + manifest["config"]["digest"].split(":")[1]
    assert docker[0]["Layers"] == ["blobs/sha256/" + layer_desc["digest"].split(":")[1]]
    assert set(json.loads(files["repositories"])["localhost/sandcheck/probe"]) == {tag, "latest"}

    with tarfile.open(fileobj=io.BytesIO(layer)) as lt:
        entries = {m.name.rstrip("/"): m for m in lt.getmembers()}
    assert entries["bin/busybox"].isfile() and entries["bin/busybox"].mode == 0o755
    assert entries["probe"].isfile() and entries["probe"].mode == 0o755
    assert entries["probe"].size == probe_image.probe_binary.stat().st_size
    for applet in (
        "sh",
        "ls",
        "cat",
        "uname",
        "dmesg",
        "sleep",
        "id",
        "ps",
        "mount",
        "head",
        "grep",
        "true",
        "echo",
        "wc",
        "hostname",
        "ip",
    ):
        assert entries[f"bin/{applet}"].issym() and entries[f"bin/{applet}"].linkname == "busybox"
    assert entries["tmp"].isdir() and entries["tmp"].mode == 0o1777
    for d in ("proc", "sys", "dev", "etc"):
        assert entries[d].isdir()
    assert b"root:x:0:0:" in lt_read(layer, "etc/passwd")
    assert b"root:x:0:" in lt_read(layer, "etc/group")


def lt_read(layer: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(layer)) as lt:
        return lt.extractfile(name).read()


def test_missing_tools_name_the_package(monkeypatch, tmp_path):
    monkeypatch.setattr(image_mod, "BUSYBOX_PATH", tmp_path / "no-busybox")
    with pytest.raises(ProbeImageError, match="busybox-static"):
        build_probe_image(tmp_path / "cache")
    monkeypatch.undo()
    monkeypatch.setattr(image_mod.shutil, "which", lambda name: None)
    with pytest.raises(ProbeImageError, match="apt-get install -y gcc libc6-dev busybox-static"):
        build_probe_image(tmp_path / "cache")


def test_import_failure_carries_ctr_stderr(probe_image, tmp_path):
    fake_ctr = tmp_path / "ctr"
    fake_ctr.write_text('#!/bin/sh\necho "ctr said: $*" >&2\nexit 3\n')
    fake_ctr.chmod(0o755)
    with pytest.raises(ProbeImageError, match="exit 3") as err:
        import_into_containerd(probe_image, "/run/x.sock", namespace="ns1", ctr=str(fake_ctr))
    said = "ctr said: --address /run/x.sock -n ns1 images import --all-platforms"
    said += f" {probe_image.archive}"
    assert said in str(err.value)
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


def test_probe_sleep_mode_stops_on_sigterm(probe_image):
    proc = subprocess.Popen([str(probe_image.probe_binary), "sleep"])
    try:
        time.sleep(0.3)
        assert proc.poll() is None, "probe sleep exited on its own"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_probe_rejects_unknown_mode(probe_image):
    proc = subprocess.run([str(probe_image.probe_binary), "bogus"], capture_output=True, timeout=30)
    assert proc.returncode == 2 and b"usage" in proc.stderr


# --------------------------------------------------------------------------
# a private containerd 1.6


def _need(tool: str) -> str:
    path = shutil.which(tool) or next(
        (p for p in (f"/usr/bin/{tool}", f"/usr/sbin/{tool}") if os.access(p, os.X_OK)), None
    )
    if path is None:
        pytest.skip(f"{tool} not installed (apt-get install -y containerd runc)")
    return path


class PrivateContainerd:
    """A throwaway containerd with its own root, state, socket and runc root,
    so tests never touch a containerd the machine may already run."""

    def __init__(self, base: Path, containerd: str, ctr: str, runc: str):
        self.base = base
        self.address = str(base / "c.sock")
        self.runc_root = str(base / "runc")
        self.ctr_bin = ctr
        self.runc_bin = runc
        self.log = base / "containerd.log"
        (base / "config.toml").write_text("version = 2\n")
        self._run_dirs_before = {
            p
            for p in ("/run/containerd", "/run/containerd/s", "/run/containerd/fifo")
            if os.path.isdir(p)
        }
        self._log_f = open(self.log, "wb")
        self.proc = subprocess.Popen(
            [
                containerd,
                "--root",
                str(base / "root"),
                "--state",
                str(base / "state"),
                "--address",
                self.address,
                "--config",
                str(base / "config.toml"),
            ],
            stdout=self._log_f,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"containerd exited {self.proc.returncode}:\n{self.log_tail()}")
            if os.path.exists(self.address):
                if self.ctr("version", check=False, timeout=10).returncode == 0:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"containerd not ready after {timeout}s:\n{self.log_tail()}")

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def ctr(
        self, *args: str, namespace: str = "k8s.io", check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess:
        argv = [self.ctr_bin, "--address", self.address, "-n", namespace, *args]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} failed ({proc.returncode}):\n"
                f"{proc.stdout}\n{proc.stderr}\n--- containerd log ---\n"
                f"{self.log_tail()}"
            )
        return proc

    def close(self) -> None:
        """Remove containers/tasks, stop containerd and its shims, unmount
        and delete everything; every step tolerates earlier failures."""
        if self.proc.poll() is None:
            try:
                ids = self.ctr("containers", "ls", "-q", check=False, timeout=30).stdout.split()
                for cid in ids:
                    self.ctr("tasks", "kill", "-s", "SIGKILL", cid, check=False, timeout=30)
                    self.ctr("tasks", "delete", "-f", cid, check=False, timeout=30)
                    self.ctr("containers", "delete", cid, check=False, timeout=30)
            except (subprocess.TimeoutExpired, OSError):
                pass
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_f.close()
        self._kill_own_shims()
        self._runc_force_delete()
        self._unmount_under_base()
        shutil.rmtree(self.base, ignore_errors=True)
        for d in ("/run/containerd/fifo", "/run/containerd/s", "/run/containerd"):
            if d not in self._run_dirs_before:
                try:
                    os.rmdir(d)  # only if empty: never disturbs another containerd
                except OSError:
                    pass

    def _kill_own_shims(self) -> None:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmdline and b"containerd-shim" in cmdline[0] and self.address.encode() in cmdline:
                try:
                    os.kill(int(entry), signal.SIGKILL)
                except OSError:
                    pass

    def _runc_force_delete(self) -> None:
        root = Path(self.runc_root)
        if not root.is_dir():
            return
        for ns_dir in root.iterdir():
            for cdir in ns_dir.iterdir() if ns_dir.is_dir() else ():
                subprocess.run(
                    [self.runc_bin, "--root", str(ns_dir), "delete", "--force", cdir.name],
                    capture_output=True,
                    timeout=30,
                )

    def _unmount_under_base(self) -> None:
        prefix = str(self.base) + "/"
        targets = []
        with open("/proc/self/mountinfo") as f:
            for line in f:
                target = line.split()[4].replace("\\040", " ")
                if target.startswith(prefix):
                    targets.append(target)
        for target in sorted(targets, key=len, reverse=True):
            subprocess.run(["umount", "-l", target], capture_output=True, timeout=30)


@pytest.fixture
def private_containerd():
    if os.geteuid() != 0:
        pytest.skip("a private containerd needs root")
    containerd, ctr, runc = _need("containerd"), _need("ctr"), _need("runc")
    base = Path(tempfile.mkdtemp(prefix="sc-ctrd-", dir="/tmp"))  # short socket path
    daemon = PrivateContainerd(base, containerd, ctr, runc)
    try:
        daemon.wait_ready()
        yield daemon
    finally:
        daemon.close()


@pytest.mark.integration
def test_import_and_run_under_runc(probe_image, private_containerd):
    d = private_containerd
    import_into_containerd(probe_image, d.address, namespace="k8s.io", ctr=d.ctr_bin)
    listed = d.ctr("images", "ls", "-q").stdout.split()
    assert probe_image.ref in listed and probe_image.alias in listed

    suffix = uuid.uuid4().hex[:8]
    run_common = ["--runtime", "io.containerd.runc.v2", "--runc-root", d.runc_root]

    # one-shot: the probe prints its document and the container goes away
    cid = f"sandcheck-probe-{suffix}"
    out = d.ctr(
        "run",
        "--rm",
        *run_common,
        "--cgroup",
        f"/sandcheck-{cid}",
        probe_image.ref,
        cid,
        "/probe",
        "json",
    ).stdout
    doc = json.loads(out)
    check_probe_document(doc)
    host_release = subprocess.run(["uname", "-r"], capture_output=True, text=True).stdout.strip()
    assert doc["uname"]["release"] == host_release  # runc shares the host kernel
    assert doc["pid"] == 1 and doc["pids"] == [1]  # own pid namespace
    host_pidns = os.readlink("/proc/self/ns/pid")
    assert doc["namespaces"]["pid"] != host_pidns
    assert any(m["target"] == "/" and m["fstype"] == "overlay" for m in doc["mounts"])
    assert cid not in d.ctr("containers", "ls", "-q").stdout.split()

    # long-running: default entrypoint + cmd ("/probe sleep"), exec busybox in
    # it, then SIGTERM must stop PID 1 promptly
    cid2 = f"sandcheck-sleep-{suffix}"
    d.ctr("run", "-d", *run_common, "--cgroup", f"/sandcheck-{cid2}", probe_image.alias, cid2)
    _wait_task_status(d, cid2, "RUNNING")
    uname = d.ctr("tasks", "exec", "--exec-id", f"x{suffix}", cid2, "/bin/uname", "-r").stdout
    assert uname.strip() == host_release
    d.ctr("tasks", "kill", "-s", "SIGTERM", cid2)
    _wait_task_status(d, cid2, "STOPPED")
    d.ctr("tasks", "delete", cid2)
    d.ctr("containers", "delete", cid2)
    for hierarchy in Path("/sys/fs/cgroup").glob("*/"):
        assert not (hierarchy / f"sandcheck-{cid2}").exists()


def _wait_task_status(d: PrivateContainerd, cid: str, status: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        for line in d.ctr("tasks", "ls", check=False).stdout.splitlines()[1:]:
            fields = line.split()
            if fields and fields[0] == cid:
                seen = fields[-1]
                if seen == status:
                    return
        time.sleep(0.2)
    raise AssertionError(f"task {cid} is {seen or 'absent'}, wanted {status}")
