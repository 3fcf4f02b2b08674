"""Escape preconditions: whether a pod of each runtime has what a known container escape
starts from (runc's /proc/self/exe overwrite, a leaked host fd or cwd, cgroup release_agent,
writable /sys and /proc/sys, host devices and paths, runtime sockets, privilege regain).

The probe's ``escape`` mode only looks (nothing is written outside the container); the
preconditions are judged by sandcheck/judges/escape.py against the runtime's ``EscapeProfile`` in
the catalog, for three pods: a default one, a restricted one (drop ALL, uid 65534,
allowPrivilegeEscalation false) and a privileged one, the control: a privileged pod where
none of the expected preconditions holds means the probe is blind.
"""

from __future__ import annotations

import json

import pytest

from sandcheck.clusters.base import PodSpec
from sandcheck.errors import ComponentError
from sandcheck.fixtures.pods import run_probe
from sandcheck.judges.escape import PRECONDITIONS, Assessment, assess, missing, unexpected

NOBODY = 65534


def _escape(pod):
    try:
        return run_probe(pod, "escape")
    except ComponentError as exc:
        pytest.fail(f"{exc}\n{pod.diagnostics()}", pytrace=False)


@pytest.fixture(scope="module")
def default_escape(probe_pod):
    """The module's default pod (RuntimeDefault seccomp, default capabilities, root)."""
    return _escape(probe_pod)


@pytest.fixture(scope="module")
def restricted_escape(runtime, pod_factory):
    return _escape(pod_factory(PodSpec(
        runtime=runtime, name_prefix=f"esc-r-{runtime.name}", drop_capabilities=["ALL"],
        run_as_user=NOBODY, allow_privilege_escalation=False)))


@pytest.fixture(scope="module")
def privileged_escape(runtime, pod_factory):
    return _escape(pod_factory(PodSpec(
        runtime=runtime, name_prefix=f"esc-p-{runtime.name}", privileged=True,
        seccomp="Unconfined")))


def _profile(runtime):
    profile = runtime.isolation.escape
    if profile is None:
        pytest.skip(f"the catalog has no escape expectation for {runtime.name}: add "
                    f"[runtimes.{runtime.name}.escape] in a catalog file (--catalog) to judge "
                    "it; the evidence is in results.json")
    return profile


def _record(run, evidence, pod_kind: str, profile, allowed, required=frozenset()
            ) -> Assessment:
    """Keep the probe's whole document and the judgement of it with the check."""
    evidence.add(**run.evidence())
    found = assess(run.data)
    evidence.add(f"escape preconditions held ({pod_kind} pod)", found.held,
                 allowed="any" if allowed is None else sorted(allowed),
                 required=sorted(required), unmeasured=found.unmeasured,
                 catalog_notes=profile.notes)
    return found


def _explain(held: dict[str, list]) -> str:
    return "; ".join(f"{name} ({PRECONDITIONS[name]}): {json.dumps(ev[:3])[:600]}"
                     for name, ev in held.items())


def _no_unexpected(runtime, found: Assessment, allowed, pod_kind: str) -> None:
    bad = unexpected(found, allowed)
    assert not bad, (f"{runtime.name} {pod_kind} pod: escape preconditions hold that the "
                     f"catalog does not allow: {_explain(bad)}")


def test_default_pod_shows_no_escape_precondition(runtime, default_escape, evidence):
    profile = _profile(runtime)
    found = _record(default_escape, evidence, "default", profile, profile.default)
    _no_unexpected(runtime, found, profile.default, "default")


def test_restricted_pod_got_its_security_context(runtime, restricted_escape, evidence):
    """The restricted pod's checks mean something only if the pod really is restricted."""
    doc = restricted_escape.data
    evidence.add(**restricted_escape.evidence("uid", "caps", "no_new_privs", "seccomp"))
    caps = {k: int(v, 16) for k, v in doc["caps"].items() if v is not None}
    wrong = []
    if doc["uid"][1] != NOBODY:
        wrong.append(f"euid {doc['uid'][1]} (asked runAsUser {NOBODY})")
    if doc["no_new_privs"] != 1:
        wrong.append(f"NoNewPrivs {doc['no_new_privs']} (asked allowPrivilegeEscalation "
                     "false)")
    for key in ("CapEff", "CapPrm", "CapBnd"):
        if caps.get(key):
            wrong.append(f"{key} {caps[key]:#x} (asked drop ALL)")
    assert not wrong, f"{runtime.name}: the restricted pod did not get " + ", ".join(wrong)


def test_restricted_pod_shows_no_escape_precondition(runtime, restricted_escape, evidence):
    """Includes privilege regain: setuid(0), an ambient capability, and exec of a setuid-root
    and a file-capability copy of the probe must all leave uid 65534 with no capability."""
    profile = _profile(runtime)
    found = _record(restricted_escape, evidence, "restricted", profile, profile.restricted)
    _no_unexpected(runtime, found, profile.restricted, "restricted")


def test_privileged_control_is_seen(runtime, privileged_escape, evidence):
    """A privileged pod must show what privilege gives there; if the probe sees none of
    it, it is blind and every passing check above proves nothing."""
    profile = _profile(runtime)
    found = _record(privileged_escape, evidence, "privileged", profile, profile.privileged,
                    profile.privileged_required)
    assert found.held, (f"{runtime.name}: a privileged pod shows no escape precondition at "
                        "all: the probe is blind")
    absent = missing(found, profile.privileged_required)
    assert not absent, (f"{runtime.name}: a privileged pod should show "
                        + ", ".join(f"{n} ({PRECONDITIONS[n]})" for n in absent)
                        + f"; it shows {sorted(found.held)}: the probe is blind to it, or the "
                        f"handler does not run what the catalog says {runtime.name} is")


def test_privileged_pod_stays_within_its_sandbox(runtime, privileged_escape, evidence):
    """For a sandbox, privileged means privileged inside it: nothing reaching the node."""
    profile = _profile(runtime)
    if profile.privileged is None:
        pytest.skip(f"the catalog lets a privileged {runtime.name} pod show any "
                    "precondition (it shares the node's kernel); see the control check")
    found = _record(privileged_escape, evidence, "privileged", profile, profile.privileged)
    _no_unexpected(runtime, found, profile.privileged, "privileged")
