"""The patcher on a corpus of real-world config shapes (pure logic: no daemon)."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomlkit

from sandcheck.catalog import Catalog
from sandcheck.cli.main import main
from sandcheck.containerd import config as cc
from sandcheck.errors import UserError

CONFIGS = Path(__file__).parent / "configs"
CATALOG = Catalog.load()


def patched(name: str, runtimes: str = "runc,crun,runsc", **kw):
    doc = cc.parse((CONFIGS / name).read_text())
    report = cc.patch(doc, CATALOG.select(runtimes), "/etc/containerd", **kw)
    return doc, report


def test_schema2_keeps_comments_imports_and_user_keys():
    doc, report = patched("schema2-comments-imports.toml")
    text = tomlkit.dumps(doc)
    for kept in ("# Node config managed by the platform team", "# the pause image comes from",
                 "# cgroupfs on this fleet", "oom_score = -999  # keep containerd alive",
                 'imports = ["/etc/containerd/conf.d/*.toml", "extra.toml"]'):
        assert kept in text
    hs = cc.handlers(doc)
    assert hs["runc"]["options"] == {"SystemdCgroup": False, "BinaryName": "runc"}
    assert hs["runsc"]["runtime_type"] == "io.containerd.runsc.v1"
    assert hs["runsc"]["options"]["ConfigPath"] == "/etc/containerd/runsc.toml"
    assert report.added == ["crun", "runsc"] and report.updated == ["runc"]
    assert "runsc.toml" in report.files


GOOD = sorted(p.name for p in CONFIGS.glob("*.toml")
              if p.name not in ("invalid.toml", "unknown-version.toml")
              and not p.name.startswith("bad-"))


@pytest.mark.parametrize("name", GOOD)
def test_second_run_changes_nothing(name):
    doc, _ = patched(name)
    once = tomlkit.dumps(doc)
    doc2 = cc.parse(once)
    report = cc.patch(doc2, CATALOG.select("runc,crun,runsc"), "/etc/containerd")
    assert cc.render(doc2, report, once) == once
    assert not report.changed
    assert report.added == [] and report.moved == [] and report.updated == []


def test_schema1_writes_legacy_table():
    doc, _ = patched("schema1-legacy.toml")
    assert "version" not in doc
    runtimes = doc["plugins"]["cri"]["containerd"]["runtimes"]
    assert set(runtimes) == {"runc", "crun", "runsc"}
    assert "io.containerd.grpc.v1.cri" not in doc["plugins"]


def test_schema3_writes_cri_v1_runtime_table():
    doc, _ = patched("schema3.toml")
    assert set(cc.handlers(doc)) == {"runc", "crun", "runsc"}
    assert cc.handlers(doc)["runc"]["options"]["SystemdCgroup"] is True
    assert "io.containerd.grpc.v1.cri" not in doc["plugins"]


def test_kind_node_config_keeps_its_handlers():
    doc, _ = patched("kind-node.toml", "runsc")
    hs = cc.handlers(doc)
    assert set(hs) == {"runc", "test-handler", "runsc"}
    assert hs["runc"]["base_runtime_spec"] == "/etc/containerd/cri-base.json"
    assert doc["plugins"]["io.containerd.grpc.v1.cri"]["tolerate_missing_hugepages_controller"]


def test_handler_in_wrong_schema_table_is_moved_with_its_keys():
    doc, report = patched("runsc-wrong-table.toml", "runsc")
    assert report.moved == [(
        "runsc",
        'plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc',
        'plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runsc',
    )]
    assert "io.containerd.grpc.v1.cri" not in doc["plugins"]
    runsc = cc.handlers(doc, 3)["runsc"]
    assert runsc["pod_annotations"] == ["dev.gvisor.*"]
    assert runsc["options"]["TypeUrl"] == "io.containerd.runsc.v1.options"
    assert any("ignored by containerd 2.x" in line for line in report.lines())


def test_user_default_runtime_and_binary_path_are_kept():
    doc, report = patched("default-crun.toml", "crun,runc")
    containerd = doc["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]
    assert containerd["default_runtime_name"] == "crun"
    assert cc.handlers(doc)["crun"]["options"]["BinaryName"] == "/usr/local/bin/crun"
    assert any("BinaryName='/usr/local/bin/crun'" in k for k in report.kept)
    assert "# this node runs everything on crun" in tomlkit.dumps(doc)


def test_set_default_runtime():
    doc, _ = patched("schema3.toml", "runsc", default_runtime="runsc")
    assert doc["plugins"]["io.containerd.cri.v1.runtime"]["containerd"][
        "default_runtime_name"] == "runsc"


def test_wrong_runtime_type_is_corrected():
    doc = cc.parse('version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc]\n'
                   'runtime_type = "io.containerd.runc.v2"\n')
    report = cc.patch(doc, CATALOG.select("runsc"), "/etc/containerd")
    assert cc.handlers(doc)["runsc"]["runtime_type"] == "io.containerd.runsc.v1"
    assert report.updated == ["runsc"]


def test_new_document_per_schema():
    for schema in (2, 3):
        doc = tomlkit.document()
        doc["version"] = schema
        cc.patch(doc, CATALOG.select("runc"), "/x")
        again = cc.parse(tomlkit.dumps(doc))
        assert cc.handlers(again, schema)["runc"]["runtime_type"] == "io.containerd.runc.v2"


def test_schema_conflict_is_an_error():
    doc = cc.parse((CONFIGS / "schema3.toml").read_text())
    with pytest.raises(UserError, match="declares version = 3 but --schema 2"):
        cc.patch(doc, CATALOG.select("runc"), "/x", schema=2)


# --- the CLI: exit status 2, one line, file byte-identical -------------------------------

def _bad_input(tmp_path, capsys, content: bytes | None, *extra: str):
    target = tmp_path / "config.toml"
    if content is not None:
        target.write_bytes(content)
    rc = main(["containerd-config", str(target), "--in-place", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("sandcheck: error: ")
    if content is not None:
        assert target.read_bytes() == content
        assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]
    return err[0]


def test_cli_invalid_toml(tmp_path, capsys):
    line = _bad_input(tmp_path, capsys, (CONFIGS / "invalid.toml").read_bytes())
    assert "is not valid TOML" in line and "fix the syntax" in line


def test_cli_unknown_version(tmp_path, capsys):
    line = _bad_input(tmp_path, capsys, (CONFIGS / "unknown-version.toml").read_bytes())
    assert "version = 4" in line and "use 2" in line


def test_cli_unknown_runtime(tmp_path, capsys):
    line = _bad_input(tmp_path, capsys, (CONFIGS / "schema3.toml").read_bytes(),
                      "--runtimes", "runc,firecracker")
    assert "unknown runtime 'firecracker'" in line


def test_cli_bad_handler_name(tmp_path, capsys):
    catalog = tmp_path.parent / f"{tmp_path.name}-catalog.toml"
    catalog.write_text('[runtimes.vendor]\nbase = "runc"\nhandler = "Vendor_RT"\n')
    target = tmp_path / "config.toml"
    content = (CONFIGS / "schema2-comments-imports.toml").read_bytes()
    target.write_bytes(content)
    rc = main(["--catalog", str(catalog), "containerd-config", str(target), "--in-place",
               "--runtimes", "vendor"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "'Vendor_RT' is not a DNS-1123 label" in err[0]
    assert target.read_bytes() == content


def test_cli_missing_file(tmp_path, capsys):
    line = _bad_input(tmp_path, capsys, None)
    assert "does not exist" in line


def test_cli_in_place_is_atomic_with_backup_and_idempotent(tmp_path, capsys):
    target = tmp_path / "config.toml"
    original = (CONFIGS / "kind-node.toml").read_bytes()
    target.write_bytes(original)
    target.chmod(0o600)
    assert main(["containerd-config", str(target), "--in-place", "--runtimes", "runsc"]) == 0
    backups = list(tmp_path.glob("config.toml.sandcheck-*.bak"))
    assert len(backups) == 1 and backups[0].read_bytes() == original
    assert target.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "runsc.toml").exists()
    assert "runsc" in cc.handlers(cc.parse(target.read_text()))
    first = target.read_bytes()
    assert main(["containerd-config", str(target), "--in-place", "--runtimes", "runsc"]) == 0
    assert target.read_bytes() == first
    assert len(list(tmp_path.glob("config.toml.sandcheck-*.bak"))) == 1
    assert "already up to date" in capsys.readouterr().err


def test_cli_stdout_without_path(capsys):
    assert main(["containerd-config", "--runtimes", "runc,runsc", "--schema", "3"]) == 0
    out = capsys.readouterr()
    doc = cc.parse(out.out)
    assert cc.schema_of(doc) == 3 and set(cc.handlers(doc)) >= {"runc", "runsc"}
    assert "runsc.toml" in out.err


def test_cli_empty_file_takes_schema_from_option(tmp_path, capsys):
    target = tmp_path / "config.toml"
    target.write_text("")
    assert main(["containerd-config", str(target), "--schema", "3", "-o",
                 str(tmp_path / "out.toml"), "--runtimes", "runc"]) == 0
    doc = cc.parse((tmp_path / "out.toml").read_text())
    assert doc["version"] == 3 and "runc" in cc.handlers(doc)
    assert target.read_text() == ""


def test_each_gvisor_handler_of_a_node_has_its_config_file_and_root(tmp_path):
    """runsc and runsc-kvm side by side: one config file each, with the platform and a
    runtime root of its own under the run's work dir."""
    from sandcheck.clusters import nodeconfig
    from sandcheck.containerd.images import ProbeImage

    image = ProbeImage(tmp_path / "a.tar", "localhost/sandcheck/probe:x", "sha256:x",
                       tmp_path / "probe")
    doc = nodeconfig.node_config(CATALOG.select("runc,youki,runsc,runsc-kvm"), tmp_path, image,
                                 schema=2, default_alias=None)
    etc = tmp_path / "etc"
    for handler, platform in (("runsc", "systrap"), ("runsc-kvm", "kvm")):
        table = cc.handler_table(doc, 2, handler)
        assert table["options"]["ConfigPath"] == f"{etc}/{handler}.toml"
        written = tomlkit.parse((etc / f"{handler}.toml").read_text())
        assert written["root"] == str(tmp_path / "runtime" / handler)
        assert written["runsc_config"]["platform"] == platform
    youki = cc.handler_table(doc, 2, "youki")["options"]
    assert youki == {"BinaryName": "youki", "Root": str(tmp_path / "runtime" / "youki")}
