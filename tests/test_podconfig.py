"""The CRI translation of a PodSpec (sandcheck/clusters/podconfig.py) against the real
containerd 1.7: pods made by the node backend, the OCI spec containerd generated from the
ContainerConfig read back with ``crictl inspect``, and what the process inside really got
(the probe reads /proc/self/status).

A wrong profile type, a capability name CRI does not understand, or a uid in the wrong
field all reach containerd without an error; only the generated spec shows them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from sandcheck.catalog import Catalog
from sandcheck.clusters.base import PodSpec

pytestmark = pytest.mark.integration

CAP_SETS = ("bounding", "effective", "permitted")
# containerd's default capability set for a non-privileged container (runc's list).
DEFAULT_CAPS = {"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
                "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
                "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"}
CAP_NET_ADMIN_BIT = 12
SECCOMP_MODE_FILTER = 2


@pytest.fixture(scope="module")
def node(runc_node):
    return runc_node


@pytest.fixture(scope="module")
def runc():
    return Catalog.load().select("runc")[0]


def _caps(status_hex: str) -> int:
    return int(status_hex, 16)


@dataclass
class Case:
    spec: dict
    check_spec: Callable[[dict], None]
    check_probe: Callable[[dict], None] = field(default=lambda doc: None)


def _seccomp_default(oci: dict) -> None:
    seccomp = oci["linux"].get("seccomp")
    assert seccomp is not None, "RuntimeDefault gave no seccomp profile"
    assert seccomp["defaultAction"] == "SCMP_ACT_ERRNO", seccomp["defaultAction"]
    allowed = {name for rule in seccomp["syscalls"] if rule["action"] == "SCMP_ACT_ALLOW"
               for name in rule["names"]}
    assert {"read", "write", "execve"} <= allowed
    assert "kexec_load" not in allowed and "open_by_handle_at" not in allowed


def _seccomp_unconfined(oci: dict) -> None:
    assert "seccomp" not in oci["linux"], oci["linux"].get("seccomp", {}).get("defaultAction")


def _cap_sets(oci: dict) -> dict[str, set[str]]:
    caps = oci["process"].get("capabilities") or {}
    return {s: set(caps.get(s) or ()) for s in CAP_SETS}


def _default_caps(oci: dict) -> None:
    for name, got in _cap_sets(oci).items():
        assert got == DEFAULT_CAPS, (name, got ^ DEFAULT_CAPS)


def _no_caps(oci: dict) -> None:
    assert _cap_sets(oci) == {s: set() for s in CAP_SETS}


def _net_admin_added(oci: dict) -> None:
    for name, got in _cap_sets(oci).items():
        assert got == DEFAULT_CAPS | {"CAP_NET_ADMIN"}, (name, got ^ DEFAULT_CAPS)


def _only_net_admin(oci: dict) -> None:
    assert _cap_sets(oci) == {s: {"CAP_NET_ADMIN"} for s in CAP_SETS}


def _uid(uid: int) -> Callable[[dict], None]:
    def check(oci: dict) -> None:
        assert oci["process"]["user"]["uid"] == uid, oci["process"]["user"]
    return check


def _probe_seccomp(mode: int) -> Callable[[dict], None]:
    def check(doc: dict) -> None:
        assert doc["seccomp"] == mode, doc["seccomp"]
    return check


def _probe_caps(expected: int) -> Callable[[dict], None]:
    def check(doc: dict) -> None:
        assert _caps(doc["caps"]["CapEff"]) == expected, doc["caps"]
        assert _caps(doc["caps"]["CapBnd"]) == expected, doc["caps"]
    return check


def _probe_has_net_admin(doc: dict) -> None:
    assert _caps(doc["caps"]["CapEff"]) >> CAP_NET_ADMIN_BIT & 1, doc["caps"]


def _probe_uid(uid: int) -> Callable[[dict], None]:
    def check(doc: dict) -> None:
        assert doc["uid"] == uid, doc["uid"]
        assert _caps(doc["caps"]["CapEff"]) == 0, "a non-root process kept capabilities"
    return check


CASES = {
    "runtime-default-seccomp": Case(
        {"seccomp": "RuntimeDefault"},
        lambda oci: (_seccomp_default(oci), _default_caps(oci), _uid(0)(oci)),
        _probe_seccomp(SECCOMP_MODE_FILTER)),
    "unconfined-seccomp": Case(
        {"seccomp": "Unconfined"}, _seccomp_unconfined, _probe_seccomp(0)),
    "drop-all": Case(
        {"drop_capabilities": ["ALL"]}, _no_caps, _probe_caps(0)),
    "add-net-admin": Case(
        {"add_capabilities": ["NET_ADMIN"]}, _net_admin_added, _probe_has_net_admin),
    "drop-all-add-net-admin": Case(
        {"drop_capabilities": ["ALL"], "add_capabilities": ["NET_ADMIN"]}, _only_net_admin,
        _probe_caps(1 << CAP_NET_ADMIN_BIT)),
    "run-as-user-65534": Case(
        {"run_as_user": 65534}, _uid(65534), _probe_uid(65534)),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_container_config_reaches_the_oci_spec(node, runc, case):
    pod = node.create_pod(PodSpec(runtime=runc, name_prefix="podconfig", **case.spec))
    try:
        inspected = node.inspect_pod(pod)
        container = inspected.get("container")
        assert isinstance(container, dict), f"crictl inspect gave no JSON: {container!r}"
        oci = container["info"]["runtimeSpec"]
        case.check_spec(oci)
        result = pod.exec(["/probe", "json"])
        assert result.exit_code == 0, result.stderr
        case.check_probe(json.loads(result.stdout))
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{pod.diagnostics()}") from None
    finally:
        node.delete_pod(pod)
