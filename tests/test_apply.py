"""`containerd-config --apply` on a running containerd 1.7 that plays the node's daemon
(private root, state and socket; restarted by a script, as this machine has no systemd):
a successful apply, a forced failure that must roll back with the old config proven back,
the dry run, and a node whose CRI does not answer (nothing touched)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from sandcheck.cli.main import main
from sandcheck.containerd import apply as ap
from sandcheck.containerd import config as cc
from sandcheck.containerd.images import PROBE_IMAGE
from sandcheck.host.workdir import remove_tree
from sandcheck.provision.paths import cache_dir, path_dir

CONTAINERD = cache_dir() / "path-containerd17" / "containerd"
NODE_CONFIG = f"""# the node's containerd config (1.x, schema 2)
version = 2

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PROBE_IMAGE}"
  restrict_oom_score_adj = true  # root lacks CAP_SYS_RESOURCE on this machine

  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
"""
RESTART = """#!/bin/sh
# stops the node's containerd (if running) and starts it again, as a service manager would
D={d}
if [ -f "$D/containerd.pid" ]; then
  pid=$(cat "$D/containerd.pid"); kill "$pid" 2>/dev/null || true
  for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
fi
PATH={path}:$PATH setsid {containerd} --config "$D/etc/config.toml" --root "$D/root" \\
  --state "$D/state" --address "$D/containerd.sock" >>"$D/containerd.log" 2>&1 </dev/null &
echo $! > "$D/containerd.pid"
"""


@pytest.fixture
def node(tmp_path):
    if not CONTAINERD.exists():
        pytest.skip(f"containerd 1.7 not found at {CONTAINERD}: run `sandcheck provision`")
    from sandcheck.fixtures.image import build_probe_image
    image = build_probe_image(cache_dir() / "probe")
    d = tmp_path / "node"
    (d / "etc").mkdir(parents=True)
    (d / "etc" / "config.toml").write_text(NODE_CONFIG + f"""
[plugins."io.containerd.internal.v1.opt"]
  path = "{d / 'opt'}"
""")
    script = d / "restart-containerd"
    script.write_text(RESTART.format(d=d, path=path_dir(), containerd=CONTAINERD))
    script.chmod(0o755)
    subprocess.run([str(script)], check=True, timeout=60)
    n = ap.Node(address=str(d / "containerd.sock"), restart_command=[str(script)],
                crictl=str(path_dir() / "crictl"), image_archive=image.archive, say=lambda _: None)
    n.wait_for_cri()
    yield d, n, image.archive
    try:
        os.kill(int((d / "containerd.pid").read_text()), signal.SIGTERM)
    except (OSError, ValueError):
        pass
    remove_tree(d)


def _argv(d: Path, archive: Path, runtimes: str, *extra: str) -> list[str]:
    return [*extra, "containerd-config", str(d / "etc" / "config.toml"), "--apply",
            "--runtimes", runtimes, "--address", str(d / "containerd.sock"),
            "--restart-command", str(d / "restart-containerd"), "--image-archive", str(archive),
            "--crictl", str(path_dir() / "crictl")]


def _pods(n: ap.Node) -> list:
    return json.loads(n.crictl_run("pods", "-o", "json").stdout)["items"]


@pytest.mark.integration
def test_apply_succeeds_with_every_handler_checked_by_a_pod(node, capsys):
    d, n, archive = node
    original = (d / "etc" / "config.toml").read_bytes()
    assert main(_argv(d, archive, "runc,crun,runsc")) == 0
    err = capsys.readouterr().err
    for handler in ("runc", "crun", "runsc"):
        assert f"apply: ok   {handler}: in CRI's effective config" in err
        assert f"apply: ok   {handler}: a pod started" in err
    assert set(ap.runtimes_of(n.cri_config())) >= {"runc", "crun", "runsc"}
    backups = list((d / "etc").glob("config.toml.sandcheck-*.bak"))
    assert len(backups) == 1 and backups[0].read_bytes() == original
    assert (d / "etc" / "runsc.toml").exists()
    assert _pods(n) == []  # the check pods are removed


@pytest.mark.integration
def test_forced_failure_rolls_back_and_proves_the_old_config(node, tmp_path, capsys):
    """A handler whose binary does not exist: containerd takes the config, the pod fails,
    the backup is restored, containerd restarted, and CRI's config is the old one."""
    d, n, archive = node
    catalog = tmp_path / "catalog.toml"
    catalog.write_text('[runtimes.broken]\nbase = "runc"\nhandler = "broken"\n'
                       'options = { BinaryName = "/nonexistent/runc" }\n')
    config = d / "etc" / "config.toml"
    original = config.read_bytes()
    before = n.cri_config()
    rc = main(_argv(d, archive, "runc,broken", "--catalog", str(catalog)))
    err = capsys.readouterr().err
    assert rc == 1
    assert "a pod on handler 'broken' did not start" in err
    assert "the previous config is back in effect" in err
    assert config.read_bytes() == original
    assert n.cri_config() == before and "broken" not in ap.runtimes_of(n.cri_config())
    assert _pods(n) == []


def test_dry_run_prints_diff_and_plan_and_changes_nothing(tmp_path, capsys):
    config = tmp_path / "config.toml"
    config.write_text(NODE_CONFIG)
    assert main(["containerd-config", str(config), "--apply", "--dry-run", "--runtimes",
                 "runc,runsc", "--address", str(tmp_path / "none.sock"),
                 "--restart-command", "/bin/false"]) == 0
    out = capsys.readouterr().out
    assert "+[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runsc]" in out
    assert "restart containerd: /bin/false" in out and "restore the backups" in out
    assert config.read_text() == NODE_CONFIG
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]


def test_cri_not_answering_touches_nothing(tmp_path, capsys):
    config = tmp_path / "config.toml"
    config.write_text(NODE_CONFIG)
    rc = main(["containerd-config", str(config), "--apply", "--runtimes", "runc,runsc",
               "--address", str(tmp_path / "none.sock"), "--restart-command", "/bin/false",
               "--crictl", str(path_dir() / "crictl")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 3  # the patch report, then the one error line
    assert "does not answer" in err[-1]
    assert config.read_text() == NODE_CONFIG
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]


def test_restart_command_is_required_without_systemd(tmp_path, capsys, monkeypatch):
    def not_systemd():
        raise ap.UserError("PID 1 is 'sh', not systemd: say how this node restarts "
                           "containerd with --restart-command CMD")

    monkeypatch.setattr(ap, "default_restart_command", not_systemd)
    config = tmp_path / "config.toml"
    config.write_text(NODE_CONFIG)
    assert main(["containerd-config", str(config), "--apply", "--address", "x.sock"]) == 2
    assert "--restart-command" in capsys.readouterr().err
    assert cc.parse(config.read_text()) == cc.parse(NODE_CONFIG)
