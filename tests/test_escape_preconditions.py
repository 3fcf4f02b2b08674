"""Escape preconditions: the judgement (sandcheck/judges/escape.py) on real and hand-made probe
documents, the catalog's profiles and their overrides, the probe's ``escape`` mode and
image, and an impostor: a handler that claims gVisor's profile but runs runc must fail.

tests/escape_samples/ holds ``probe escape`` output captured in node-backend pods of this
machine (containerd 1.7, cgroup v1 hybrid): default, restricted (drop ALL, uid 65534,
no_new_privs) and privileged pods of runc, crun and runsc.
"""

from __future__ import annotations

import copy
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
from helpers import FAKE_RUNSC, skip_unless_node_backend

from sandcheck.catalog import BUILTIN, Catalog
from sandcheck.errors import UserError
from sandcheck.judges.escape import PRECONDITIONS, assess, missing, unexpected

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = Path(__file__).resolve().parent / "escape_samples"


def sample(name: str) -> dict:
    return json.loads((SAMPLES / f"{name}.json").read_text())


# -- the real documents ---------------------------------------------------------------------

MEASURED = {
    "runc-default": set(),
    "runc-restricted": set(),
    "runc-privileged": {"block_device_openable", "block_device_present", "cgroupfs_mountable",
                        "core_pattern_writable", "kallsyms_addresses",
                        "notify_on_release_writable", "proc_sys_writable",
                        "release_agent_writable"},
    "crun-privileged": {"block_device_openable", "block_device_present", "cgroupfs_mountable",
                        "core_pattern_writable", "kallsyms_addresses",
                        "notify_on_release_writable", "proc_sys_writable",
                        "release_agent_writable", "sys_writable"},
    "runsc-default": {"proc_sys_writable", "sysrq_trigger_writable"},
    "runsc-restricted": set(),
    "runsc-privileged": {"block_device_present", "cgroupfs_mountable", "proc_sys_writable",
                         "sys_writable", "sysrq_trigger_writable"},
}


@pytest.mark.parametrize("name", sorted(MEASURED))
def test_captured_documents_hold_what_was_measured(name):
    found = assess(sample(name))
    assert found.names() == MEASURED[name], found.held
    assert not found.unmeasured, found.unmeasured


@pytest.mark.parametrize("name", sorted(MEASURED))
def test_builtin_profiles_accept_their_own_runtime(name):
    runtime, kind = name.split("-")
    profile = BUILTIN[runtime].isolation.escape
    found = assess(sample(name))
    allowed = {"default": profile.default, "restricted": profile.restricted,
               "privileged": profile.privileged}[kind]
    assert unexpected(found, allowed) == {}
    if kind == "privileged":
        assert missing(found, profile.privileged_required) == []


def test_an_impostor_under_gvisors_profile_fails_the_privileged_checks():
    """runc's privileged pod judged as if it were gVisor: the node's release_agent,
    core_pattern and kernel symbols are outside the profile, and the Sentry's writable
    /sys the control requires is not there."""
    profile = BUILTIN["runsc"].isolation.escape
    found = assess(sample("runc-privileged"))
    bad = unexpected(found, profile.privileged)
    assert {"release_agent_writable", "core_pattern_writable", "kallsyms_addresses",
            "block_device_openable"} <= set(bad)
    assert missing(found, profile.privileged_required) == ["sys_writable"]


def test_a_blind_probe_fails_the_control():
    """A privileged document with nothing in it (a probe that saw nothing) misses every
    required precondition."""
    for runtime in ("runc", "runsc"):
        profile = BUILTIN[runtime].isolation.escape
        assert missing(assess({}), profile.privileged_required) == sorted(
            profile.privileged_required)


# -- each rule on hand-made documents ------------------------------------------------------


def _link(target, same, kind="path", type_="file", rdev=None):
    out = {"target": target, "kind": kind, "same_file": same, "type": type_}
    if rdev:
        out["rdev"] = rdev
    return out


def _proc(pid=1, exe=None, cwd=None, fds=()):
    return {"pid": pid, "exe": exe or _link("/probe", True),
            "cwd": cwd or _link("/", True, type_="dir"), "root": _link("/", True, type_="dir"),
            "fds": list(fds)}


def test_host_exe_reachable_and_writable():
    exe = {**_link("/usr/bin/runc", False), "write_open": {"attempted": True, "ok": True}}
    found = assess({"processes": [_proc(exe=exe)]})
    assert {"host_exe_reachable", "host_exe_writable"} <= found.names()
    sealed = {**_link("/memfd:runc_cloned:/proc/self/exe (deleted)", None, kind="memfd"),
              "write_open": {"attempted": True, "ok": False, "errno": "EPERM"}}
    assert assess({"processes": [_proc(exe=sealed)]}).names() == set()


def test_host_fds_count_for_directories_files_and_devices_not_dev_null():
    fds = [{"fd": 0, **_link("/dev/null", False, type_="chr", rdev="1:3")},
           {"fd": 1, **_link("pipe:[1]", None, kind="pipe", type_="fifo")},
           {"fd": 2, **_link("host:[7]", None, kind="host", type_="chr")}]
    assert assess({"processes": [_proc(fds=fds)]}).names() == set()
    leaked = fds + [{"fd": 7, **_link("/sys/fs/cgroup", False, type_="dir")}]
    found = assess({"processes": [_proc(fds=leaked)]})
    assert found.names() == {"host_fd_open"}
    assert found.held["host_fd_open"][0]["fd"] == 7
    kmsg = [{"fd": 3, **_link("/dev/kmsg", False, type_="chr", rdev="1:11")}]
    assert assess({"processes": [_proc(fds=kmsg)]}).names() == {"host_fd_open"}


def test_cwd_outside_the_root():
    outside = _proc(cwd=_link("/var/lib/containerd", False, type_="dir"))
    assert assess({"processes": [outside]}).names() == {"cwd_outside_root"}
    unreachable = {"cwd": {"getcwd": "(unreachable)/", "reachable": False}}
    assert assess(unreachable).names() == {"cwd_outside_root"}


def test_cgroup_release_agent_in_a_mounted_cgroupfs():
    doc = {"cgroup_mount": {"namespace": "private", "attempts": [
        {"fstype": "cgroup", "options": "memory", "ok": True,
         "release_agent": {"exists": True, "open_w_ok": True},
         "notify_on_release": {"exists": True, "open_w_ok": False}},
        {"fstype": "cgroup2", "ok": False, "errno": "EPERM"}]}}
    assert assess(doc).names() == {"cgroupfs_mountable", "release_agent_writable"}
    refused = {"cgroup_mount": {"attempts": [{"fstype": "cgroup", "ok": False}]}}
    assert assess(refused).names() == set()
    assert "cgroupfs_mountable" in assess({"cgroup_mount": {"tmpdir_errno": "EROFS"}}).unmeasured


def _path(**kw):
    return {"exists": True, "dev_null": False, "statvfs_ro": False, "access_w_ok": True, **kw}


def test_proc_and_sys_writability_needs_a_writable_mount_and_access():
    writable = {"paths": {"/sys": _path(), "/proc/sys": _path(),
                          "/proc/sys/kernel/core_pattern": _path(),
                          "/proc/sysrq-trigger": _path()}}
    assert assess(writable).names() == {"sys_writable", "proc_sys_writable",
                                        "core_pattern_writable", "sysrq_trigger_writable"}
    read_only = {"paths": {"/sys": _path(statvfs_ro=True, access_w_ok=False),
                           "/proc/sys": _path(statvfs_ro=True),
                           "/proc/sys/kernel/core_pattern": _path(statvfs_ro=True,
                                                                  access_w_ok=False),
                           "/proc/sysrq-trigger": _path(access_w_ok=False)}}
    assert assess(read_only).names() == set()
    # a /dev/null bind mount passes access(W_OK) (a device node), yet it masks the file
    masked = {"paths": {"/proc/sysrq-trigger": _path(dev_null=True),
                        "/proc/kcore": _path(dev_null=True, open_r_ok=True)}}
    assert assess(masked).names() == set()
    kcore = {"paths": {"/proc/kcore": _path(open_r_ok=True)}, "kallsyms_nonzero": True}
    assert assess(kcore).names() == {"kcore_readable", "kallsyms_addresses"}


def test_host_paths_and_runtime_sockets():
    mounts = [{"target": "/", "root": "/", "fstype": "overlay"},
              {"target": "/etc/hosts", "root": "/var/lib/x/hosts", "fstype": "ext4"},
              {"target": "/sys/fs/cgroup/cpu", "root": "/kubepods/x", "fstype": "cgroup"}]
    assert assess({"mountinfo": mounts}).names() == set()
    host_path = mounts + [{"target": "/host", "root": "/", "fstype": "ext4"}]
    assert assess({"mountinfo": host_path}).names() == {"host_path_mount"}
    gofer = [{"target": "/data", "root": "/", "fstype": "9p"}]
    assert assess({"mountinfo": gofer}).names() == {"host_path_mount"}
    sockets = {"sockets": ["/run/containerd/containerd.sock", "/run/app/metrics.sock"]}
    assert assess(sockets).held["runtime_socket"] == [
        {"path": "/run/containerd/containerd.sock"}]
    assert assess({"socket_mounts": ["/var/run/docker.sock"]}).names() == {"runtime_socket"}


def test_block_devices():
    doc = {"block_devices": [{"path": "/dev/vda", "rdev": "254:0", "open_r_ok": False}]}
    assert assess(doc).names() == {"block_device_present"}
    doc["block_devices"][0]["open_r_ok"] = True
    assert assess(doc).names() == {"block_device_present", "block_device_openable"}


def test_privilege_regain():
    doc = sample("runc-restricted")
    assert assess(doc).names() == set()
    regained = copy.deepcopy(doc)
    regained["regain"].update(setuid0_ret=0, uid_after=0)
    assert assess(regained).names() == {"setuid_root"}
    ambient = copy.deepcopy(doc)
    ambient["regain"]["ambient_raise_ret"] = 0
    assert assess(ambient).names() == {"ambient_raise"}
    # without no_new_privs the setuid bit works: euid 0 from 65534
    suid = copy.deepcopy(doc)
    child = json.loads(suid["exec"]["/probe-suid"]["output"])
    child["uid"], child["no_new_privs"] = [65534, 0, 0], 0
    suid["exec"]["/probe-suid"]["output"] = json.dumps(child)
    assert assess(suid).names() == {"suid_exec_gains"}
    fcap = copy.deepcopy(doc)
    fcap["exec"]["/probe-fcap"]["output"] = json.dumps(
        {**child, "uid": [65534] * 3, "caps": {"CapEff": "0000000000202400",
                                               "CapPrm": "0000000000202400"}})
    assert assess(fcap).held["fcap_exec_gains"][0]["gained_caps"] == "0x202400"
    # the kernel refusing the exec (EPERM) gains nothing; a missing copy is not judged
    assert json.loads(doc["exec"]["/probe-fcap"]["output"]) == {"exec_errno": "EPERM"}
    gone = copy.deepcopy(doc)
    gone["exec"]["/probe-suid"] = {"present": False}
    assert "suid_exec_gains" in assess(gone).unmeasured


def test_root_calling_setuid0_is_no_regain():
    assert "setuid_root" not in assess(sample("runc-default")).held


# -- the catalog ------------------------------------------------------------------------------


def test_builtin_profiles_name_only_known_preconditions():
    for rt in BUILTIN.values():
        profile = rt.isolation.escape
        if profile is None:
            continue
        named = profile.default | profile.restricted | profile.privileged_required | (
            profile.privileged or frozenset())
        assert named <= set(PRECONDITIONS), (rt.name, named - set(PRECONDITIONS))
        if profile.privileged is not None:
            assert profile.privileged_required <= profile.privileged, rt.name
    assert BUILTIN["runc"].isolation.escape.default == frozenset()
    assert BUILTIN["runsc"].isolation.escape.restricted == frozenset()
    assert "kcore" in BUILTIN["runsc"].isolation.escape.notes


def test_user_catalog_overrides_the_escape_profile(tmp_path):
    path = tmp_path / "vendor.toml"
    path.write_text('[runtimes.vendor]\nbase = "runsc"\nhandler = "vendor"\n'
                    '[runtimes.vendor.escape]\nrestricted = ["cgroupfs_mountable"]\n'
                    'privileged = "any"\n')
    profile = Catalog.load(path).get("vendor").isolation.escape
    assert profile.restricted == {"cgroupfs_mountable"}
    assert profile.privileged is None
    assert profile.default == BUILTIN["runsc"].isolation.escape.default  # inherited
    assert profile.notes == BUILTIN["runsc"].isolation.escape.notes


@pytest.mark.parametrize("table, message", [
    ('escape = ["x"]', "must be a table"),
    ("[runtimes.vendor.escape]\nbogus = []", "unknown keys ['bogus']"),
    ('[runtimes.vendor.escape]\ndefault = ["no_such_thing"]', "unknown preconditions"),
    ('[runtimes.vendor.escape]\ndefault = "cgroupfs_mountable"', "must be a list"),
])
def test_user_catalog_escape_errors_are_one_clear_line(tmp_path, table, message):
    path = tmp_path / "bad.toml"
    path.write_text(f'[runtimes.vendor]\nbase = "runc"\n{table}\n')
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Catalog.load(path)


# -- the CRI translation the three pods rely on ------------------------------------------------


def test_cri_pods_get_kubelets_proc_paths_no_new_privs_and_a_privileged_sandbox(tmp_path):
    """containerd's CRI masks and write-protects only the /proc paths its caller sends; the
    node backend sends kubelet's, or a default pod's /proc/sys is the node's, writable."""
    from sandcheck.clusters.base import PodSpec
    from sandcheck.clusters.podconfig import (
        READONLY_PATHS,
        container_config,
        sandbox_config,
    )

    runc = BUILTIN["runc"]
    default = container_config(PodSpec(runtime=runc), "img", "run")["linux"]["security_context"]
    assert "/proc/kcore" in default["masked_paths"] and "/sys/firmware" in default["masked_paths"]
    assert default["readonly_paths"] == list(READONLY_PATHS)
    assert "/proc/sys" in READONLY_PATHS and "/proc/sysrq-trigger" in READONLY_PATHS
    assert "no_new_privs" not in default
    restricted = container_config(PodSpec(runtime=runc, allow_privilege_escalation=False),
                                  "img", "run")["linux"]["security_context"]
    assert restricted["no_new_privs"] is True
    privileged = PodSpec(runtime=runc, privileged=True)
    assert sandbox_config(privileged, "p", "run", tmp_path)["linux"]["security_context"][
        "privileged"] is True
    assert "privileged" not in sandbox_config(PodSpec(runtime=runc), "p", "run", tmp_path)[
        "linux"]["security_context"]


def test_docker_pods_get_no_new_privileges():
    from sandcheck.clusters.base import PodSpec
    from sandcheck.clusters.docker.pods import create_options

    spec = PodSpec(runtime=BUILTIN["runc"], allow_privilege_escalation=False,
                   seccomp="Unconfined")
    options = create_options(spec, "run", "runc", None)
    assert "no-new-privileges" in options["security_opt"]
    assert len(options["security_opt"]) == 2  # and still unconfined
    assert "security_opt" not in create_options(PodSpec(runtime=BUILTIN["runc"]), "run",
                                                "runc", None)


# -- the probe and its image -----------------------------------------------------------------


@pytest.fixture(scope="module")
def probe_image(tmp_path_factory):
    from sandcheck.fixtures.image import build_probe_image

    return build_probe_image(tmp_path_factory.mktemp("probe-cache"))


def _layer_members(archive: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(archive) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))
        layer = outer.extractfile(manifest[0]["Layers"][0]).read()
    with tarfile.open(fileobj=io.BytesIO(layer), mode="r:gz") as tar:
        return {m.name: m for m in tar.getmembers()}


def test_image_carries_setuid_and_file_capability_copies(probe_image):
    from sandcheck.fixtures.image import FCAP_XATTR, PROBE_FCAP, PROBE_SUID

    members = _layer_members(probe_image.archive)
    assert members[PROBE_SUID].mode == 0o4755 and members[PROBE_SUID].uid == 0
    xattr = members[PROBE_FCAP].pax_headers["SCHILY.xattr.security.capability"]
    assert xattr.encode("utf-8", "surrogateescape") == FCAP_XATTR
    assert members["probe"].mode == 0o755 and not members["probe"].pax_headers


def test_probe_escape_runs_on_the_host_and_leaves_nothing(probe_image, tmp_path):
    """Run as root here, the cgroup mounts go into a private mount namespace: none shows in
    the host's mount table, and the probe removed its temp dir (a failed rmdir is one of
    its errors)."""
    proc = subprocess.run([str(probe_image.probe_binary), "escape"], capture_output=True,
                          timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["mode"] == "escape" and doc["errors"] == []
    assert {"processes", "cwd", "cgroup_files", "cgroup_mount", "paths", "mountinfo",
            "block_devices", "sockets", "socket_mounts", "userns", "regain", "exec",
            "methods", "uid", "caps", "no_new_privs"} <= doc.keys()
    me = next(p for p in doc["processes"] if p["self"])
    assert me["exe"]["target"] == str(probe_image.probe_binary)
    assert me["exe"]["same_file"] is True and not me["exe"]["write_open"]["attempted"]
    assert doc["cwd"] == {"getcwd": str(tmp_path), "errno": None, "reachable": True}
    if os.geteuid() == 0:
        assert doc["cgroup_mount"]["namespace"] == "private"
    assert ".sandcheck-probe-" not in Path("/proc/self/mountinfo").read_text()
    caps = subprocess.run([str(probe_image.probe_binary), "caps"], capture_output=True,
                          timeout=30)
    assert caps.returncode == 0
    assert json.loads(caps.stdout)["uid"] == [os.getuid(), os.geteuid(), os.getresuid()[2]]


# -- an impostor, for real -------------------------------------------------------------------


IMPOSTOR = FAKE_RUNSC


@pytest.mark.integration
def test_an_impostor_fails_the_escape_suite(tmp_path, run_suite):
    """The security suite on the node backend with a handler that claims runsc's profile
    but runs runc: the privileged control and the sandbox boundary must fail, naming the
    preconditions that gave it away."""
    skip_unless_node_backend()
    catalog = tmp_path / "impostor.toml"
    catalog.write_text(IMPOSTOR)
    proc, found = run_suite("suites/security/test_escape.py", "--backend", "node",
                            "--runtimes", "fake-runsc", "--catalog", str(catalog))
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    checks = {check_id: c for (check_id, _), c in found.items()}
    control = checks["security.privileged_control_is_seen"]
    boundary = checks["security.privileged_pod_stays_within_its_sandbox"]
    assert control["status"] == "failed" and "sys_writable" in control["message"]
    assert boundary["status"] == "failed"
    for name in ("release_agent_writable", "core_pattern_writable"):
        assert name in boundary["message"], boundary["message"]
    # runc's default and restricted pods show nothing beyond gVisor's allowance
    assert checks["security.default_pod_shows_no_escape_precondition"]["status"] == "passed"
    assert checks["security.restricted_pod_shows_no_escape_precondition"]["status"] == "passed"
    assert all(c["evidence"] for c in checks.values() if c["status"] != "skipped")
