"""`imports` and `--drop-in`: handlers in imported files are seen and reported, the drop-in
holds what each containerd series needs (1.x replaces a plugin's section with an imported
one, 2.x merges), the main file gains the import only with --in-place, a second run
changes nothing, and the real containerd (1.7 and 2.2) sees every handler through imports.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sandcheck.catalog import Catalog
from sandcheck.cli.main import main
from sandcheck.containerd import config as cc
from sandcheck.containerd import imports as ci
from sandcheck.containerd.verify import verify
from sandcheck.errors import ComponentError
from sandcheck.provision.paths import cache_dir

RUNTIMES = Catalog.load().select("runc,crun,runsc")
CRI2 = 'plugins."io.containerd.grpc.v1.cri"'
CRI3 = 'plugins."io.containerd.cri.v1.runtime"'


def _node(tmp_path: Path, schema: int) -> Path:
    """A node's /etc/containerd: a main file importing conf.d/*.toml, gVisor in conf.d."""
    etc = tmp_path / "etc"
    (etc / "conf.d").mkdir(parents=True)
    cri = CRI2 if schema == 2 else CRI3
    image = ('sandbox_image = "mirror.example/pause:3.9"\n' if schema == 2 else "")
    (etc / "config.toml").write_text(
        f'# the fleet config\nversion = {schema}\nimports = ["conf.d/*.toml"]\n\n[{cri}]\n'
        f'  {image}  [{cri}.containerd.runtimes.runc]\n    runtime_type = "io.containerd.runc.v2"'
        f'\n    [{cri}.containerd.runtimes.runc.options]\n      SystemdCgroup = false\n')
    (etc / "conf.d" / "10-gvisor.toml").write_text(
        f'version = {schema}\n[{cri}.containerd.runtimes.runsc]\n'
        f'  runtime_type = "io.containerd.runsc.v1"\n  pod_annotations = ["dev.gvisor.*"]\n')
    return etc


def test_imported_handlers_are_seen_with_their_source(tmp_path):
    etc = _node(tmp_path, 3)
    main_file = etc / "config.toml"
    files = ci.resolve(main_file, main_file.read_text())
    assert [f.path.name for f in files] == ["config.toml", "10-gvisor.toml"]
    sources = ci.handler_sources(files, 3)
    assert sources == {"runc": [main_file.resolve()],
                       "runsc": [(etc / "conf.d" / "10-gvisor.toml").resolve()]}


def test_1x_import_replaces_the_plugin_section(tmp_path):
    """The measured 1.x rule: the drop-in's CRI section wins whole, so runc is gone."""
    etc = _node(tmp_path, 2)
    files = ci.resolve(etc / "config.toml", (etc / "config.toml").read_text())
    assert set(ci.handler_sources(files, 2)) == {"runsc"}
    effective = ci.effective(files, 2)
    assert "sandbox_image" not in effective["plugins"]["io.containerd.grpc.v1.cri"]


@pytest.mark.parametrize("schema", [2, 3])
def test_drop_in_without_in_place_leaves_main_and_says_so(tmp_path, capsys, schema):
    etc = _node(tmp_path, schema)
    main_before = (etc / "config.toml").read_bytes()
    dropdir = tmp_path / "sandcheck.d"
    assert main(["containerd-config", str(etc / "config.toml"), "--drop-in",
                 str(dropdir)]) == 0
    err = capsys.readouterr().err
    assert (etc / "config.toml").read_bytes() == main_before
    assert f"does not import {dropdir}" in err and "--in-place" in err
    assert "handler 'runsc' is defined in" in err and "10-gvisor.toml" in err
    drop = cc.parse((dropdir / "99-sandcheck.toml").read_text())
    assert cc.schema_of(drop) == schema
    hs = cc.handlers(drop)
    assert hs["crun"]["runtime_type"] == "io.containerd.runc.v2"
    if schema == 3:  # 2.x merges: only what changes, the user's keys stay in their files
        assert "runtime_type" not in hs["runsc"] and "pod_annotations" not in hs["runsc"]
        assert "SystemdCgroup" not in hs["runc"]["options"]
    else:  # 1.x replaces: the whole effective CRI section, the imported runsc's keys too
        assert hs["runsc"]["pod_annotations"] == ["dev.gvisor.*"]
        assert "replaces a plugin's whole section" in err


@pytest.mark.parametrize("schema", [2, 3])
def test_drop_in_in_place_adds_the_import_and_is_idempotent(tmp_path, capsys, schema):
    etc = _node(tmp_path, schema)
    dropdir = tmp_path / "sandcheck.d"
    argv = ["containerd-config", str(etc / "config.toml"), "--drop-in", str(dropdir),
            "--in-place"]
    assert main(argv) == 0
    text = (etc / "config.toml").read_text()
    assert f'"{dropdir}/*.toml"' in text and text.startswith("# the fleet config")
    assert len(list(etc.glob("config.toml.sandcheck-*.bak"))) == 1
    files = ci.resolve(etc / "config.toml", text)
    assert files[-1].path == (dropdir / "99-sandcheck.toml").resolve()
    effective = ci.effective(files, schema)
    hs = cc.handlers(effective, schema)
    assert {"runc", "crun", "runsc"} <= set(hs)
    # the user's setting survives where containerd sees it (1.x: 10-gvisor.toml's CRI
    # section replaced the main file's, runc's options with it, before sandcheck came)
    assert hs["runc"]["options"].get("SystemdCgroup") is (False if schema == 3 else None)
    assert hs["runsc"]["pod_annotations"] == ["dev.gvisor.*"]
    first = {p: p.read_bytes() for p in (etc / "config.toml", dropdir / "99-sandcheck.toml")}
    capsys.readouterr()
    assert main(argv) == 0
    assert {p: p.read_bytes() for p in first} == first
    assert "already up to date" in capsys.readouterr().err


def _binary(series: str) -> str:
    name = {"1.7": "path-containerd17", "2.2": "path-containerd2"}[series]
    exe = cache_dir() / name / "containerd"
    if not exe.exists():
        pytest.skip(f"containerd {series} not found at {exe}: run `sandcheck provision`")
    return str(exe)


@pytest.mark.integration
@pytest.mark.parametrize("series,schema", [("1.7", 2), ("2.2", 3)])
def test_verify_reads_handlers_through_imports(tmp_path, capsys, series, schema):
    """The real containerd applies the imports (private copies of them): handlers from
    conf.d and from the drop-in are in its CRI config; before the drop-in, 1.x lost runc."""
    binary = _binary(series)
    etc = _node(tmp_path, schema)
    main_doc = cc.parse((etc / "config.toml").read_text())
    if schema == 2:  # the import replaced the CRI section: runc, the default, is gone
        gone = r"no corresponding runtime .*default_runtime_name = ..?.runc"
        with pytest.raises(ComponentError, match=gone):
            verify(main_doc, RUNTIMES, str(etc), containerd=binary, origin=etc / "config.toml")
    else:
        before = verify(main_doc, RUNTIMES, str(etc), containerd=binary,
                        origin=etc / "config.toml")
        status = {line.split()[1].rstrip(":"): line.split()[0] for line in before.lines}
        assert status == {"runc": "ok", "crun": "FAIL", "runsc": "ok"}
    assert main(["containerd-config", str(etc / "config.toml"), "--drop-in",
                 str(tmp_path / "sandcheck.d"), "--in-place", "--verify", "--containerd",
                 binary]) == 0
    assert main(["verify", str(etc / "config.toml"), "--containerd", binary]) == 0
    out = capsys.readouterr().out
    assert out.count("ok   ") == 3
