"""`verify` against the real containerd 1.x (Debian) and 2.x (built by `sandcheck provision`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sandcheck.catalog import Catalog
from sandcheck.cli.main import main
from sandcheck.containerd import config as cc
from sandcheck.containerd.verify import verify
from sandcheck.errors import ComponentError
from sandcheck.provision.paths import containerd2_path_dir

CONFIGS = Path(__file__).parent / "configs"
RUNTIMES = Catalog.load().select("runc,crun,runsc")


def _containerd(series: str) -> str:
    if series == "1.x":
        exe = shutil.which("containerd") or "/usr/bin/containerd"
        hint = "apt-get install containerd"
    else:
        exe = str(containerd2_path_dir() / "containerd")
        hint = "run `sandcheck provision` (it builds containerd 2.x)"
    if not Path(exe).exists():
        pytest.skip(f"containerd {series} not found at {exe}: {hint}")
    return exe


SERIES = {"1.x": 2, "2.x": 3}


@pytest.mark.integration
@pytest.mark.parametrize("series", SERIES)
def test_patched_defaults_verify(series):
    binary = _containerd(series)
    doc = cc.default_document(SERIES[series], binary)
    cc.patch(doc, RUNTIMES, "/etc/containerd")
    result = verify(doc, RUNTIMES, "/etc/containerd", containerd=binary)
    assert result.ok, result.lines
    assert [line.split()[1] for line in result.lines] == ["runc:", "crun:", "runsc:"]


@pytest.mark.integration
@pytest.mark.parametrize("series,config", [("1.x", "schema2-comments-imports.toml"),
                                           ("1.x", "kind-node.toml"),
                                           ("2.x", "schema3.toml"),
                                           ("2.x", "kind-node.toml")])
def test_patched_corpus_verifies(series, config, tmp_path):
    binary = _containerd(series)
    # The files these configs name, at the places they name them (relative to the config).
    text = (CONFIGS / config).read_text().replace("/etc/containerd/cri-base.json",
                                                  str(tmp_path / "cri-base.json"))
    (tmp_path / "cri-base.json").write_text('{"ociVersion": "1.1.0"}')
    (tmp_path / "extra.toml").write_text("")
    origin = tmp_path / "config.toml"
    doc = cc.parse(text)
    cc.patch(doc, RUNTIMES, "/etc/containerd")
    result = verify(doc, RUNTIMES, "/etc/containerd", containerd=binary, origin=origin)
    assert result.ok, result.lines


@pytest.mark.integration
def test_cri_plugin_failure_is_reported(tmp_path):
    """A base runtime spec that does not exist stops CRI: the error names the cause."""
    binary = _containerd("1.x")
    doc = cc.parse((CONFIGS / "kind-node.toml").read_text().replace(
        "/etc/containerd/cri-base.json", str(tmp_path / "missing.json")))
    with pytest.raises(ComponentError, match="CRI plugin did not load: .*missing.json"):
        verify(doc, RUNTIMES, "/etc/containerd", containerd=binary)


@pytest.mark.integration
def test_wrong_table_is_caught_and_named():
    binary = _containerd("2.x")
    doc = cc.parse((CONFIGS / "runsc-wrong-table.toml").read_text())
    result = verify(doc, Catalog.load().select("runc,runsc"), "/etc/containerd",
                    containerd=binary)
    assert not result.ok
    failure = next(line for line in result.lines if line.startswith("FAIL"))
    assert 'plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc' in failure
    assert 'it must be in [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runsc]' \
        in failure


@pytest.mark.integration
def test_cli_verify_then_write(tmp_path, capsys):
    binary = _containerd("2.x")
    target = tmp_path / "config.toml"
    original = (CONFIGS / "runsc-wrong-table.toml").read_bytes()
    target.write_bytes(original)
    assert main(["containerd-config", str(target), "--in-place", "--verify",
                 "--containerd", binary, "--runtimes", "runc,crun,runsc"]) == 0
    err = capsys.readouterr().err
    assert "moved handler 'runsc'" in err and "verify: ok   runsc" in err
    assert main(["verify", str(target), "--containerd", binary]) == 0
    backup = next(tmp_path.glob("config.toml.sandcheck-*.bak"))
    assert backup.read_bytes() == original


@pytest.mark.integration
def test_schema3_on_containerd_1x_is_a_user_error(tmp_path, capsys):
    binary = _containerd("1.x")
    target = tmp_path / "config.toml"
    target.write_bytes((CONFIGS / "schema3.toml").read_bytes())
    assert main(["verify", str(target), "--containerd", binary]) == 2
    assert "cannot read a version = 3 config" in capsys.readouterr().err


def test_backends_lists_every_registry_entry(capsys):
    from sandcheck.cli.main import main
    from sandcheck.clusters.registry import BACKENDS

    assert main(["backends"]) == 0
    listed = capsys.readouterr().out
    for name in BACKENDS:
        assert f"\n{name}" in "\n" + listed, f"{name} missing from `sandcheck backends`"
