"""The runtime catalog and the RuntimeClass manifests made from it (pure logic)."""

from __future__ import annotations

import pytest
import yaml

from sandcheck.catalog import BUILTIN, Catalog, classify
from sandcheck.clusters.runtimeclass import manifests
from sandcheck.errors import UserError


def test_builtin_runtimes_cover_the_design():
    assert {"runc", "crun", "runsc", "kata", "youki"} <= set(BUILTIN)
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
    docs = list(yaml.safe_load_all(manifests(Catalog.load().select("runc,runsc,kata"))))
    assert [(d["metadata"]["name"], d["handler"]) for d in docs] == [
        ("runc", "runc"), ("gvisor", "runsc"), ("kata-qemu", "kata-qemu")]
    assert all(d["apiVersion"] == "node.k8s.io/v1" and d["kind"] == "RuntimeClass"
               for d in docs)
    assert docs[2]["overhead"] == {"podFixed": {"memory": "160Mi", "cpu": "250m"}}
    assert "overhead" not in docs[0]
