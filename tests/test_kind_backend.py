"""The kind backend: which node gets which handler, the containerd patches it generates,
its options; and, on this machine, a real cluster whose run leaves nothing behind — after
an ordinary stop and after Ctrl-C in the middle of a suite."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import tomlkit

from sandcheck.catalog import Catalog
from sandcheck.clusters import registry
from sandcheck.clusters.base import BackendSettings
from sandcheck.clusters.dockerd.daemon import cgroup_parent_of
from sandcheck.clusters.kind import layout, nodeconfig
from sandcheck.clusters.kind.backend import KindCluster, kind_config, open_backend
from sandcheck.clusters.kind.leftovers import remove_leftovers
from sandcheck.clusters.kind.nodes import host_lacks
from sandcheck.errors import UserError
from sandcheck.host import proc as hostproc
from sandcheck.host.cgroups import cgroup_hierarchies
from sandcheck.host.mounts import mounts_under
from sandcheck.host.state import HostState
from sandcheck.host.workdir import WORK_BASE, claimed_by, run_id_of
from sandcheck.provision.paths import cache_dir
from sandcheck.timeouts import TIMEOUTS, WaitTimeout, wait_until

ROOT = Path(__file__).resolve().parent.parent
CRI = ("plugins", "io.containerd.grpc.v1.cri", "containerd", "runtimes")
needs_kind = pytest.mark.skipif(
    os.geteuid() != 0 or registry.entry("kind").unavailable() is not None,
    reason="needs root and `sandcheck provision --kind` (kind, docker.io, the node image)")


def runtimes(names: str = "runc,crun,runsc"):
    return Catalog.load(None).select(names)


def handlers_of(text: str) -> dict:
    doc = tomlkit.parse(text).unwrap()
    for key in CRI:
        doc = doc[key]
    return doc


# -- pure ---------------------------------------------------------------------------------

def test_sandbox_runtimes_go_on_the_first_worker_only():
    rts = runtimes()
    plans = layout.plan(["c-control-plane", "c-worker", "c-worker2"], rts)
    assert {p.node: [rt.name for rt in p.runtimes] for p in plans} == {
        "c-control-plane": ["runc", "crun"], "c-worker": ["runc", "crun", "runsc"],
        "c-worker2": ["runc", "crun"]}
    assert plans[1].labels == {f"{layout.LABEL_PREFIX}{n}": "true"
                               for n in ("runc", "crun", "runsc")}
    assert layout.lacking("runsc", plans) == ["c-control-plane", "c-worker2"]
    assert layout.lacking("runc", plans) == []
    scheduled = {rt.name: rt.scheduling for rt in layout.scheduled(rts, plans)}
    assert scheduled == {"runc": None, "crun": None, "runsc": {
        "nodeSelector": {"sandcheck.dev/runtime-runsc": "true"}}}


def test_a_single_node_gets_every_handler_and_classes_need_no_scheduling():
    plans = layout.plan(["c-control-plane"], runtimes())
    assert len(plans[0].runtimes) == 3
    assert all(rt.scheduling is None for rt in layout.scheduled(runtimes(), plans))


def test_create_patch_registers_common_handlers_in_v2_keys_on_cgroupfs():
    config = kind_config(1, True, runtimes())
    text = config["containerdConfigPatches"][0]
    assert tomlkit.parse(text)["version"] == 2
    tables = handlers_of(text)
    assert set(tables) == {"runc", "crun", "test-handler"}  # runsc: only where labelled
    assert tables["crun"]["options"] == {"BinaryName": "crun", "SystemdCgroup": False}
    assert tables["crun"]["base_runtime_spec"] == "/etc/containerd/cri-base.json"
    assert tables["test-handler"]["options"]["SystemdCgroup"] is False
    assert any('"cgroupDriver": "cgroupfs"' in p for p in config["kubeadmConfigPatches"])
    assert config["networking"]["kubeProxyMode"] == "none"  # the offline image's settings
    assert "networking" not in kind_config(1, False, runtimes())  # a user's image: kind's


def test_node_patch_follows_the_node_runc_handler():
    node = ('version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]\n'
            'runtime_type = "io.containerd.runc.v2"\nbase_runtime_spec = "/b.json"\n'
            '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]\n'
            'SystemdCgroup = true\n')
    text, report = nodeconfig.patched(node, runtimes("crun,runsc"))
    tables = handlers_of(text)
    assert tables["crun"]["options"]["SystemdCgroup"] is True
    assert tables["crun"]["base_runtime_spec"] == "/b.json"
    assert tables["runsc"]["options"]["ConfigPath"] == "/etc/containerd/runsc.toml"
    assert 'systemd-cgroup = "true"' in report.files["runsc.toml"]
    assert nodeconfig.patched(text, runtimes("crun,runsc"))[0] == text  # idempotent
    _, kvm = nodeconfig.patched(node, runtimes("youki,runsc-kvm"))
    assert 'systemd-cgroup = "true"' in kvm.files["runsc-kvm.toml"]
    assert 'platform = "kvm"' in kvm.files["runsc-kvm.toml"]
    assert handlers_of(nodeconfig.patched(node, runtimes("youki"))[0])["youki"]["options"] == {
        "BinaryName": "youki", "SystemdCgroup": True}


def test_options_are_checked_without_starting_anything():
    settings = BackendSettings(runtimes=runtimes("runc"), run_id="check",
                               options={"kind_workers": 2, "kind_name": "mine"})
    be = open_backend(settings)
    assert (be.cluster, be.workers, be.reuse) == ("mine", 2, False)
    with pytest.raises(UserError, match="--kind-workers"):
        open_backend(BackendSettings(runtimes=[], run_id="x", options={"kind_workers": -1}))
    with pytest.raises(UserError, match="--kind-name"):
        open_backend(BackendSettings(runtimes=[], run_id="x", options={"kind_name": "A_b"}))
    reuse = open_backend(BackendSettings(runtimes=[], run_id="x",
                                         options={"kind_cluster": "theirs"}))
    assert (reuse.cluster, reuse.reuse) == ("theirs", True)


def test_a_runtime_the_host_cannot_supply_is_left_out_with_the_reason():
    kata = Catalog.load(None).select("kata")[0]
    assert host_lacks(kata) == kata.unavailable
    fake = replace(runtimes("runc")[0], name="nope", binaries=("sandcheck-no-such-binary",))
    assert "sandcheck provision --runtimes nope" in host_lacks(fake)


def test_leftovers_of_a_dead_run_name_only_what_exists(tmp_path):
    workdir = tmp_path / "kind-20990101000000-abcdef"
    workdir.mkdir()
    (workdir / "bridges.txt").write_text("br-sandcheck0\n")  # a link that does not exist
    assert remove_leftovers(workdir) == []


# -- a real cluster -----------------------------------------------------------------------

def host_changes(before: HostState) -> list[str]:
    """Changes a kind run could cause: sysctls, a bridge left behind, firewall rules
    (other runs on this machine add and remove veth and bridges of their own)."""
    return [line for line in before.differences()
            if line.startswith(("sysctl", "new link br-")) or "rules" in line]


def assert_run_left_nothing(workdir: Path) -> None:
    try:
        wait_until(lambda: True if not hostproc.processes_naming(workdir) else None,
                   TIMEOUTS.component_stop, f"the processes of {workdir} to exit")
    except WaitTimeout:
        pass
    assert hostproc.processes_naming(workdir) == []
    assert mounts_under(str(workdir)) == []
    assert not workdir.exists(), f"{workdir} was left behind"
    parent = cgroup_parent_of(run_id_of(workdir)).lstrip("/")
    assert [b / parent for b in cgroup_hierarchies() if (b / parent).exists()] == []


@pytest.mark.integration
@pytest.mark.full  # .ci/run's kind step certifies runc, crun and runsc on 3 nodes
@needs_kind
def test_cluster_with_a_worker_runs_every_handler_and_leaves_nothing(capsys):
    from sandcheck.clusters.base import PodSpec, new_run_id
    from sandcheck.fixtures.image import build_probe_image

    before = HostState.read()
    image = build_probe_image(cache_dir() / "probe")
    be = KindCluster(runtimes(), new_run_id(), image, workers=1)
    seen: dict[str, str] = {}
    stop_engine = be._stop_engine

    def look_then_stop() -> None:  # what is left in the engine once the cluster is deleted
        seen["clusters"] = " ".join(be.kind.clusters())
        seen["containers"] = be.engine.docker("ps", "-aq").stdout.strip()
        stop_engine()

    be._stop_engine = look_then_stop
    try:
        be.start()
        assert be.verified.keys() == {"runc", "crun", "runsc"}
        runsc = next(rt for rt in be.runtimes if rt.name == "runsc")
        pod = be.create_pod(PodSpec(runtime=runsc, name_prefix="where"))
        assert pod.node_name == be.nodes_with("runsc")[0] != be.nodes_lacking("runsc")[0]
        assert be.inspect_pod(pod)["sandbox"]["status"]["runtimeHandler"] == "runsc"
        assert be.host_pids(pod), "no host process names the runsc sandbox"
        with capsys.disabled():
            print(f"\nkind backend start: {be.timings}")
    finally:
        be.stop()
    assert seen == {"clusters": "", "containers": ""}
    assert_run_left_nothing(be.workdir)
    assert host_changes(before) == []


def _restore_default_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a shell's background jobs ignore it


def _probe_running(proc: subprocess.Popen) -> Path | None:
    """The run's work dir once a probe pod runs in one of its nodes."""
    if proc.poll() is not None:
        raise AssertionError(f"the suite ended early:\n{proc.stdout.read()[-3000:]}")
    for workdir in claimed_by(proc.pid):
        parent = cgroup_parent_of(run_id_of(workdir))
        for pid, _ in hostproc.processes_mentioning("/probe sleep"):
            try:
                if parent in Path(f"/proc/{pid}/cgroup").read_text():
                    return workdir
            except OSError:
                continue
    return None


@pytest.mark.integration
@needs_kind
def test_interrupted_kind_run_leaves_nothing(tmp_path):
    before = HostState.read()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "suites/isolation", "-q", "-p", "no:cacheprovider",
         "--backend", "kind", "--kind-workers", "0", "--runtimes", "runc,runsc",
         "--report-dir", str(tmp_path / "report")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, preexec_fn=_restore_default_signals)
    try:
        workdir = wait_until(lambda: _probe_running(proc), TIMEOUTS.cluster_start,
                             "a probe pod to run in a kind node", interval=1.0)
        os.kill(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=TIMEOUTS.cluster_start)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "KeyboardInterrupt" in out or "Interrupted" in out, out[-2000:]
    assert_run_left_nothing(workdir)
    assert host_changes(before) == [], out[-2000:]
    # The run's cluster lived only in its private engine, whose processes and data are gone.
    assert not (WORK_BASE / workdir.name / "docker.sock").exists()
