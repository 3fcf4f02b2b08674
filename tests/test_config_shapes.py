"""The patcher on every TOML shape containerd accepts: inline tables at each level, dotted
keys, arrays of tables, CRLF, a BOM, unicode comments (real-world-shaped files in
tests/configs/). What must hold for each: a strict parser (tomllib) reads the result as the
original data plus the handlers, every comment survives, and a second run changes nothing.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomllib

from sandcheck.catalog import Catalog
from sandcheck.cli.main import main
from sandcheck.containerd import config as cc

CONFIGS = Path(__file__).parent / "configs"
RUNTIMES = Catalog.load().select("runc,crun,runsc")
SHAPES = ["inline-runtimes.toml", "inline-runtime-options.toml", "dotted-keys.toml",
          "crlf-bom-unicode.toml", "containerd17-default.toml", "containerd22-default.toml"]


def _text(name: str) -> str:
    return (CONFIGS / name).read_bytes().decode()


def _strict(text: str) -> dict:
    return tomllib.loads(text.removeprefix("\ufeff"))


def _comments(text: str) -> list[str]:
    return [m.group(0).strip() for m in re.finditer(r"#[^\r\n]*", text)]


def _without_handlers(data: dict, schema: int) -> dict:
    """The data with the handlers' table taken out (what no patch may change)."""
    node = data
    for key in cc.runtimes_path(schema)[:-1]:
        node = node.get(key, {})
    node.pop("runtimes", None)
    return data


@pytest.mark.parametrize("name", SHAPES)
def test_shape_patched_valid_keeps_everything_and_is_idempotent(name):
    text = _text(name)
    doc = cc.parse(text)
    schema = cc.schema_of(doc)
    before = _strict(text)
    assert cc.patch(doc, RUNTIMES, "/etc/containerd").changed
    out = cc.dumps(doc, like=text)
    after = _strict(out)
    handlers = cc.handlers(cc.parse(out))
    assert set(handlers) >= {"runc", "crun", "runsc"}
    assert {h["runtime_type"] for h in handlers.values()} >= {"io.containerd.runc.v2",
                                                               "io.containerd.runsc.v1"}
    # Every handler key the user had is still there with its value.
    for handler, table in cc.handlers(cc.parse(text)).items():
        for key, value in table.items():
            if key != "options":
                assert handlers[handler][key] == value
        for key, value in (table.get("options") or {}).items():
            if value != "":  # an empty option is unset: the catalog's value fills it
                assert handlers[handler]["options"][key] == value
    assert _without_handlers(after, schema) == _without_handlers(before, schema)
    assert _comments(out) == _comments(text)
    again = cc.parse(out)
    report = cc.patch(again, RUNTIMES, "/etc/containerd")
    assert not report.changed and cc.render(again, report, out) == out


def test_inline_tables_stay_inline():
    doc = cc.parse(_text("inline-runtimes.toml"))
    cc.patch(doc, RUNTIMES, "/etc/containerd")
    out = cc.dumps(doc)
    assert "runtimes.runsc]" not in out  # no header table inside an inline one
    assert re.search(r"runtimes = \{.*runsc = \{", out)


def test_dotted_keys_stay_dotted():
    doc = cc.parse(_text("dotted-keys.toml"))
    cc.patch(doc, RUNTIMES, "/etc/containerd")
    out = cc.dumps(doc)
    assert "runtimes.runc.options.BinaryName = \"runc\"" in out
    assert "runtimes.runsc = {" in out
    # the dotted keys stay inside their [..containerd] table, before [metrics]
    assert out.index("runtimes.runsc") < out.index("[metrics]")


def test_crlf_and_bom_are_kept(tmp_path):
    original = (CONFIGS / "crlf-bom-unicode.toml").read_bytes()
    assert original.startswith(b"\xef\xbb\xbf") and b"\r\n" in original  # fixture intact
    target = tmp_path / "config.toml"
    target.write_bytes(original)
    assert main(["containerd-config", str(target), "--in-place"]) == 0
    out = target.read_bytes()
    assert out.startswith(b"\xef\xbb\xbf")
    assert out.count(b"\n") == out.count(b"\r\n")
    assert "Konfiguration für den Knoten".encode() in out and "ñandú".encode() in out
    assert main(["containerd-config", str(target), "--in-place"]) == 0
    assert target.read_bytes() == out


def test_user_inline_options_are_kept():
    doc = cc.parse(_text("inline-runtime-options.toml"))
    report = cc.patch(doc, RUNTIMES, "/etc/containerd")
    hs = cc.handlers(doc)
    assert hs["runsc"]["options"]["ConfigPath"] == "/opt/gvisor/runsc.toml"
    assert hs["crun"]["options"]["BinaryName"] == "/usr/local/bin/crun"
    assert any("ConfigPath='/opt/gvisor/runsc.toml'" in k for k in report.kept)


@pytest.mark.parametrize("name,path", [
    ("bad-runtimes-array-of-tables.toml",
     'plugins."io.containerd.grpc.v1.cri".containerd.runtimes] is an array of tables'),
    ("bad-handler-is-string.toml",
     'plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runsc] is a string'),
])
def test_shape_that_cannot_be_edited_exits_2_naming_the_key(name, path, tmp_path, capsys):
    target = tmp_path / "config.toml"
    original = (CONFIGS / name).read_bytes()
    target.write_bytes(original)
    assert main(["containerd-config", str(target), "--in-place"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sandcheck: error: [") and path in err[0]
    assert target.read_bytes() == original
    assert [p.name for p in tmp_path.iterdir()] == ["config.toml"]


def test_layout_tomlkit_would_misrender_is_refused_not_written():
    """The safety net: if tomlkit renders an edit at another key path, the edit is refused
    with that path (simulated by a render that drops what was added)."""
    from sandcheck.errors import UserError
    doc = cc.parse(_text("dotted-keys.toml"))
    want = doc.unwrap()
    want["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["x"] = {"a": 1}
    with pytest.raises(UserError, match=r'\[plugins."io.containerd.grpc.v1.cri".containerd'
                                        r'.runtimes\] is written in a layout'):
        cc._check_rendering(doc, want)
