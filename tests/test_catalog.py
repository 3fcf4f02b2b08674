"""The runtime catalog and the RuntimeClass manifests made from it (pure logic)."""

from __future__ import annotations

import pytest
import yaml

from sandcheck.catalog import BUILTIN, Catalog, classify
from sandcheck.clusters.runtimeclass import manifests
from sandcheck.errors import UserError


def test_builtin_runtimes_cover_the_design():
    assert {"runc", "crun", "runsc", "runsc-kvm", "kata", "youki"} <= set(BUILTIN)
    runsc = BUILTIN["runsc"]
    assert (runsc.handler, runsc.runtime_class, runsc.runtime_type) == (
        "runsc", "gvisor", "io.containerd.runsc.v1")
    assert runsc.containerd_options("/etc/containerd")["ConfigPath"] == \
        "/etc/containerd/runsc.toml"
    assert BUILTIN["kata"].overhead == {"memory": "160Mi", "cpu": "250m"}


def test_user_file_adds_and_overrides(tmp_path):
    path = tmp_path / "vendor.toml"
    path.write_text('''
[runtimes.vendor]
base = "runc"
handler = "vendor-rt"
options = { BinaryName = "/opt/vendor/bin/vendor-rt" }
overhead = { memory = "20Mi" }
default_capabilities = "0000000000000000"

[runtimes.vendor.syscalls]
io_uring_setup = ["denied", "unsupported"]

[runtimes.runsc]
runtime_class = "gvisor-strict"
''')
    cat = Catalog.load(path)
    vendor = cat.get("vendor")
    assert vendor.handler == "vendor-rt" and vendor.runtime_type == "io.containerd.runc.v2"
    assert vendor.options["BinaryName"] == "/opt/vendor/bin/vendor-rt"
    assert vendor.isolation.syscalls["io_uring_setup"] == {"denied", "unsupported"}
    assert vendor.isolation.syscalls["mount"] == {"denied"}  # inherited from runc
    assert vendor.isolation.default_capabilities == 0
    assert cat.get("runsc").runtime_class == "gvisor-strict"
    assert cat.get("runsc").handler == "runsc"
    assert [r.name for r in cat.select("vendor,runc,vendor")] == ["vendor", "runc"]


@pytest.mark.parametrize("text,message", [
    ("[runtimes.x]\nhandler = 'x'\n", "needs handler and runtime_type"),
    ("[runtimes.x]\nbase = 'nope'\n", "base 'nope' is not a known runtime"),
    ("[runtimes.runc]\ncolour = 'blue'\n", "unknown keys ['colour']"),
    ("[runtimes.runc.syscalls]\nmount = 'maybe'\n", "syscalls.mount has ['maybe']"),
    ("[runtimes.runc]\nhandler = 'Not_A_Label'\n", "is not a DNS-1123 label"),
    ("[other]\n", "has no [runtimes.NAME] tables"),
    ("[runtimes.runc\n", "is not valid TOML"),
])
def test_user_file_errors_are_one_clear_line(tmp_path, text, message):
    path = tmp_path / "catalog.toml"
    path.write_text(text)
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Catalog.load(path)


def test_unknown_runtime_names_the_known_ones():
    with pytest.raises(UserError, match="unknown runtime 'firecracker': the catalog knows runc"):
        Catalog.load().select("runc,firecracker")


@pytest.mark.parametrize("result,outcome", [
    ({"ret": 0, "errno": None}, "ok"),
    ({"ret": 3, "errno": None}, "ok"),
    ({"ret": -1, "errno": "EPERM"}, "denied"),
    ({"ret": -1, "errno": "EACCES"}, "denied"),
    ({"ret": -1, "errno": "ENOSYS"}, "unsupported"),
    ({"ret": -1, "errno": "EOPNOTSUPP"}, "unsupported"),
    ({"ret": -1, "errno": "EINVAL"}, "reached"),
])
def test_syscall_outcome_classes(result, outcome):
    assert classify(result) == outcome


def test_runtimeclass_manifests():
    docs = list(yaml.safe_load_all(manifests(
        Catalog.load().select("runc,runsc,kata,youki,runsc-kvm"))))
    assert [(d["metadata"]["name"], d["handler"]) for d in docs] == [
        ("runc", "runc"), ("gvisor", "runsc"), ("kata", "kata"), ("youki", "youki"),
        ("gvisor-kvm", "runsc-kvm")]
    assert all(d["apiVersion"] == "node.k8s.io/v1" and d["kind"] == "RuntimeClass"
               for d in docs)
    assert docs[2]["overhead"] == {"podFixed": {"memory": "160Mi", "cpu": "250m"}}
    assert "overhead" not in docs[0]


def test_youki_is_a_native_runtime_with_runcs_expectations():
    youki, runc = BUILTIN["youki"], BUILTIN["runc"]
    assert youki.unavailable is None and youki.cargo_build == "youki"
    assert (youki.runtime_type, youki.options) == ("io.containerd.runc.v2",
                                                   {"BinaryName": "youki"})
    assert youki.binaries == ("youki", "containerd-shim-runc-v2")
    assert youki.isolation == runc.isolation  # host kernel, RuntimeDefault applied, same caps
    assert youki.isolation.own_kernel is False
    assert youki.isolation.default_capabilities == 0x00000000A80425FB


def test_runsc_kvm_is_the_same_runsc_on_the_kvm_platform():
    kvm, runsc = BUILTIN["runsc-kvm"], BUILTIN["runsc"]
    assert (kvm.handler, kvm.runtime_class, kvm.precondition) == ("runsc-kvm", "gvisor-kvm",
                                                                  "kvm")
    assert kvm.containerd_options("/etc/containerd") == {
        "TypeUrl": "io.containerd.runsc.v1.options",
        "ConfigPath": "/etc/containerd/runsc-kvm.toml"}
    assert kvm.config_files == {"runsc-kvm.toml": {"runsc_config": {
        "platform": "kvm", "oci-seccomp": "true"}}}
    assert runsc.config_files["runsc.toml"]["runsc_config"]["platform"] == "systrap"
    assert (kvm.binaries, kvm.go_build) == (runsc.binaries, runsc.go_build)
    assert kvm.upstream_deviations == runsc.upstream_deviations
    same = ("own_kernel", "dmesg_marker", "default_capabilities", "extra_devices", "escape")
    assert all(getattr(kvm.isolation, f) == getattr(runsc.isolation, f) for f in same)
    assert kvm.isolation.surface.expected is None  # not measured on a KVM that runs gVisor
    assert kvm.isolation.surface.never <= runsc.isolation.surface.never


def test_kata_expects_a_guest_kernel_and_a_hypervisor_process():
    kata = BUILTIN["kata"]
    assert (kata.runtime_type, kata.binaries) == (
        "io.containerd.kata.v2", ("containerd-shim-kata-v2", "kata-runtime"))
    assert kata.isolation.own_kernel is True and kata.precondition == "kata"
    assert {"qemu-system-x86_64", "cloud-hypervisor", "firecracker"} <= set(
        kata.isolation.surface.executors)
    assert "workload" not in kata.isolation.surface.executors


def test_summaries_say_what_a_report_shows_beside_the_measurements():
    assert BUILTIN["runsc-kvm"].summary() == {
        "handler": "runsc-kvm", "runtime_class": "gvisor-kvm",
        "description": BUILTIN["runsc-kvm"].description, "kernel": "own",
        "executors": ["runsc-sandbox", "runsc-gofer"], "precondition": "kvm"}
    assert BUILTIN["youki"].summary()["kernel"] == "node"
