"""Host preconditions of runtimes beyond their binaries: gVisor's KVM platform and Kata.

The parsing and the decisions are pure logic here, Kata's against fake ``kata-runtime``
programs (no Kata run is possible on this project's machines). One test boots runsc on
this machine's KVM for real and checks that the precondition reports what the sandbox
said.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from sandcheck.catalog import BUILTIN
from sandcheck.clusters import nodeconfig
from sandcheck.containerd import config as cc
from sandcheck.containerd.images import ProbeImage
from sandcheck.host import runcgroups
from sandcheck.host.kvm import guest_failure, kvm_evidence, kvm_unusable
from sandcheck.host.workdir import WORK_BASE
from sandcheck.provision import install, preconditions
from sandcheck.provision.paths import which

# What runsc's sandbox wrote on this project's VM (its boot log, the pinned gVisor), both
# ways it dies there: about half the boots panic setting the vCPU's registers, the others
# run out of memory slots.
SAMPLES = Path(__file__).parent / "kvm_samples"
VCPU_PANIC = (SAMPLES / "vcpu_panic.txt").read_text()
SLOTS_THROW = (SAMPLES / "slots_throw.txt").read_text()


# ---- parsing ------------------------------------------------------------------------------

def test_the_sandboxs_panic_and_where_it_was_raised():
    assert guest_failure(VCPU_PANIC) == {
        "error": "panic: error initializing vCPU(id=0) state: error setting system "
                 "registers: invalid argument",
        "at": "kvm.(*machine).createVCPU, "
              "gvisor.dev/gvisor/pkg/sentry/platform/kvm/machine.go:267"}


def test_a_go_runtime_throw_is_a_failure_too():
    found = guest_failure(SLOTS_THROW)
    assert found["error"] == "fatal error: set memory region failed; out of slots"
    assert found["at"].startswith("kvm.(*machine).mapMemorySlot, ")  # not runtime.throw
    assert guest_failure("I1207 boot ok\nall lisafs servers exited\n") is None


@pytest.mark.parametrize("evidence,reason", [
    ({"device": "/dev/kvm", "present": False}, "/dev/kvm does not exist"),
    ({"device": "/dev/kvm", "present": True, "open": "EACCES: Permission denied"},
     "does not open: EACCES"),
    ({"device": "/dev/kvm", "present": True, "open": "ok", "api_version": 11},
     "answers KVM_GET_API_VERSION with 11, not 12"),
    ({"device": "/dev/kvm", "present": True, "open": "ok", "api_version": 12,
      "create_vm": "EBUSY: Device or resource busy"}, "refuses KVM_CREATE_VM: EBUSY"),
])
def test_what_the_ioctls_alone_rule_out(evidence, reason):
    assert reason in kvm_unusable(evidence)


def test_ioctls_that_answer_leave_the_decision_to_a_boot():
    assert kvm_unusable({"device": "/dev/kvm", "present": True, "open": "ok",
                         "api_version": 12, "create_vm": "ok"}) is None


def test_a_missing_device_is_evidence_not_an_error(tmp_path):
    assert kvm_evidence(str(tmp_path / "kvm")) == {"device": str(tmp_path / "kvm"),
                                                   "present": False}


def test_the_boot_reason_names_the_sandboxs_error():
    boot = {"exit_code": 128, "output": "running container: creating container: cannot "
            "create sandbox: cannot read client sync file: waiting for sandbox to start: EOF",
            **guest_failure(VCPU_PANIC)}
    reason = preconditions.boot_reason(boot)
    assert reason == ("runsc cannot start a sandbox on the KVM platform here: panic: error "
                      "initializing vCPU(id=0) state: error setting system registers: invalid "
                      "argument (kvm.(*machine).createVCPU, gvisor.dev/gvisor/pkg/sentry/"
                      "platform/kvm/machine.go:267)")
    no_log = preconditions.boot_reason({"exit_code": 1, "output": "x\nlast words\n\n"})
    assert no_log.endswith("exit 1: last words")
    assert preconditions.boot_reason({"exit_code": 0, "output": ""}) is None
    hung = preconditions.boot_reason({"exit_code": None, "seconds": 30.04,
                                      "output": "(no exit within 30s)",
                                      "last_boot_line": "I1207 calibrated_clock.go:74] ready"})
    assert hung == ("runsc's sandbox on the KVM platform did not finish `true` within 30s "
                    "here (killed); the last line its kernel logged: I1207 "
                    "calibrated_clock.go:74] ready")


def test_the_probe_spec_keeps_the_sandbox_in_the_probes_cgroup():
    spec = preconditions.probe_spec("/sandcheck-precondition-x/sandbox")
    assert spec["linux"]["cgroupsPath"] == "/sandcheck-precondition-x/sandbox"
    assert spec["root"] == {"path": "/", "readonly": True}
    assert {"type": "network"} in spec["linux"]["namespaces"]


# ---- Kata, against fake kata-runtime programs ------------------------------------------------

KATA_ENV = {
    "Kernel": {"Path": "/opt/kata/share/kata-containers/vmlinux-6.12.28-153", "Parameters": ""},
    "Meta": {"Version": "1.0.27"},
    "Image": {"Path": "/opt/kata/share/kata-containers/kata-containers.img"},
    "Initrd": {"Path": ""},
    "Hypervisor": {"MachineType": "q35", "Version": "QEMU emulator version 9.1.2",
                   "Path": "/opt/kata/bin/qemu-system-x86_64"},
    "Runtime": {"Config": {"Path": "/opt/kata/share/defaults/kata-containers/"
                                   "configuration-qemu.toml"},
                "Version": {"OCI": "1.2.0", "Version": {"Semver": "3.17.0"}}},
    "Host": {"VMContainerCapable": True},
}


def _program(path: Path, script: str) -> Path:
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def fake_kata(bin_dir: Path, check_exit: int = 0, check_output: str = "") -> Path:
    """containerd-shim-kata-v2 and a kata-runtime answering ``env --json`` and ``check``."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    _program(bin_dir / "containerd-shim-kata-v2", "exit 0\n")
    (bin_dir / "env.json").write_text(json.dumps(KATA_ENV))
    _program(bin_dir / "kata-runtime", f"""\
case "$1" in
  env) cat {bin_dir}/env.json ;;
  check) printf '%s\\n' "{check_output}"; exit {check_exit} ;;
  *) exit 2 ;;
esac
""")
    return bin_dir


@pytest.fixture
def fresh(monkeypatch):
    """No precondition remembered from another test."""
    monkeypatch.setattr(preconditions, "_TRIED", {})


def test_kata_env_gives_hypervisor_kernel_and_config():
    assert preconditions.kata_env("warning: x\n" + json.dumps(KATA_ENV)) == {
        "hypervisor": "/opt/kata/bin/qemu-system-x86_64",
        "hypervisor_version": "QEMU emulator version 9.1.2",
        "guest_kernel": "/opt/kata/share/kata-containers/vmlinux-6.12.28-153",
        "guest_image": "/opt/kata/share/kata-containers/kata-containers.img",
        "config": "/opt/kata/share/defaults/kata-containers/configuration-qemu.toml",
        "version": "3.17.0"}
    assert preconditions.kata_env("not json") == {}


def test_a_kata_host_that_passes_its_check_is_usable(tmp_path, fresh):
    bin_dir = fake_kata(tmp_path / "bin", check_output="System is capable of running Kata "
                        "Containers")
    outcome = preconditions.try_precondition(BUILTIN["kata"], str(bin_dir))
    assert outcome.holds, outcome.reason
    assert outcome.evidence["kata"]["hypervisor"].endswith("qemu-system-x86_64")
    check = outcome.evidence["kata_runtime_check"]
    assert check["exit_code"] == 0 and "capable" in check["output"]
    assert check["command"][1:] == ["check", "--no-network-checks"]
    assert json.loads(outcome.evidence["kata_runtime_env"]["output"])["Meta"]


def test_a_kata_host_that_fails_its_check_is_left_out_with_its_words(tmp_path, fresh):
    bin_dir = fake_kata(tmp_path / "bin", check_exit=1,
                        check_output="ERROR: System is not capable of running Kata Containers")
    outcome = preconditions.try_precondition(BUILTIN["kata"], str(bin_dir))
    assert outcome.reason == ("kata-runtime check fails on this host (exit 1): ERROR: System "
                              "is not capable of running Kata Containers")


def test_provision_registers_kata_where_its_binaries_are(tmp_path, monkeypatch, fresh):
    """With Kata's binaries on PATH provisioning reports it available with the evidence of
    its check, and the node's containerd config gets its handler."""
    bin_dir = fake_kata(tmp_path / "bin")
    monkeypatch.setenv("SANDCHECK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    entry = install._runtime_entry(BUILTIN["kata"], [], [])
    assert entry["available"] is True, entry
    assert entry["binaries"]["kata-runtime"] == str(bin_dir / "kata-runtime")
    assert entry["precondition"]["holds"] is True
    assert entry["precondition"]["kata"]["guest_kernel"].endswith("vmlinux-6.12.28-153")
    image = ProbeImage(tmp_path / "a.tar", "localhost/sandcheck/probe:x", "sha256:x",
                       tmp_path / "probe")
    doc = nodeconfig.node_config([BUILTIN["runc"], BUILTIN["kata"]], tmp_path / "work",
                                 image, schema=2, default_alias=None)
    kata = cc.handler_table(doc, 2, "kata")
    assert kata["runtime_type"] == "io.containerd.kata.v2"
    assert kata["privileged_without_host_devices"] is True


def test_without_kata_the_reason_says_what_is_missing(tmp_path, monkeypatch, fresh):
    monkeypatch.setenv("SANDCHECK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    entry = install._runtime_entry(BUILTIN["kata"], [], [])
    assert entry["available"] is False and "precondition" not in entry
    assert entry["reason"] == BUILTIN["kata"].unavailable
    assert "containerd-shim-kata-v2 and kata-runtime on PATH" in entry["reason"]


def test_a_precondition_is_tried_once_per_binary(tmp_path, monkeypatch, fresh):
    calls = []
    monkeypatch.setitem(preconditions.PRECONDITIONS, "kata",
                        lambda rt, path: calls.append(path) or preconditions.Outcome("kata", None))
    bin_dir = fake_kata(tmp_path / "bin")
    for _ in range(3):
        preconditions.try_precondition(BUILTIN["kata"], str(bin_dir))
    assert len(calls) == 1
    assert preconditions.try_precondition(BUILTIN["runc"]) is None


def test_not_runnable_splits_reasons_from_evidence(tmp_path, monkeypatch, fresh):
    monkeypatch.setitem(preconditions.PRECONDITIONS, "kvm", lambda rt, path: preconditions.Outcome(
        "kvm", "runsc cannot start a sandbox on the KVM platform here: panic: x",
        {"kvm": {"api_version": 12}}))
    reasons, evidence = preconditions.not_runnable(
        [BUILTIN["runc"], BUILTIN["runsc-kvm"]], str(tmp_path))
    assert reasons == {"runsc-kvm": "runsc cannot start a sandbox on the KVM platform here: "
                                    "panic: x"}
    assert evidence["runsc-kvm"]["holds"] is False
    assert evidence["runsc-kvm"]["kvm"] == {"api_version": 12} and "runc" not in evidence


# ---- gVisor on this machine's KVM, for real ------------------------------------------------

@pytest.mark.skipif(which("runsc") is None, reason="runsc not provisioned: run `sandcheck "
                    "provision --runtimes runsc`")
@pytest.mark.skipif(os.geteuid() != 0, reason="booting a gVisor sandbox needs root")
def test_the_kvm_precondition_reports_what_the_sandbox_said(fresh):
    before = set(WORK_BASE.glob("precondition-*")) if WORK_BASE.is_dir() else set()
    outcome = preconditions.try_precondition(BUILTIN["runsc-kvm"])
    kvm = outcome.evidence["kvm"]
    if not kvm["present"]:
        assert outcome.reason.startswith("runsc-kvm needs KVM: /dev/kvm does not exist")
        return
    boot = outcome.evidence["boot"]
    if outcome.holds:  # a host whose KVM runs gVisor
        assert boot["exit_code"] == 0
    elif boot["exit_code"] is None:
        # A sandbox that hung (seen on one of this project's VMs): killed at the timeout,
        # the reason names the last line its kernel logged.
        assert boot["last_boot_line"] in outcome.reason and "did not finish" in outcome.reason
        assert boot["excerpt"].splitlines()[-1].endswith(boot["last_boot_line"])
        assert not boot["last_boot_line"].startswith(("D1", "I1", "W1")), "glog's header"
    else:
        # The reason is the sandbox's own first error line, found in its log (seen on
        # another: the vCPUs' registers refused).
        assert boot["error"].startswith(("panic: ", "fatal error: ")), boot
        assert boot["error"] in boot["excerpt"].splitlines()
        assert boot["error"] in outcome.reason and boot["failed_in"] == "boot"
        assert kvm["api_version"] == 12 and kvm["create_vm"] == "ok"
    after = set(WORK_BASE.glob("precondition-*")) if WORK_BASE.is_dir() else set()
    assert after <= before, "the probe left its work dir"
    assert not [c for c in runcgroups.runs_in_cgroups().values()
                for name in c if name.startswith("/sandcheck-precondition-")]


def test_a_user_runtime_may_name_only_known_preconditions(fresh):
    odd = replace(BUILTIN["runc"], name="odd", precondition="tpm")
    assert "does not know" in preconditions.try_precondition(odd).reason
