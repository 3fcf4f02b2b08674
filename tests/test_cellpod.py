"""The cell pod of a fleet run: which checks' pods it serves, its manifest, its log."""

from __future__ import annotations

import json

import pytest

from sandcheck.catalog import Catalog
from sandcheck.clusters.base import PodSpec
from sandcheck.clusters.cellpod import (
    COLLECTOR,
    END,
    MARK,
    NOBODY,
    REPORTS,
    VARIANTS,
    cell_manifest,
    parse_log,
    variant_of,
)

RUNC = Catalog.load().select("runc")[0]


@pytest.mark.parametrize("spec,container", [
    (PodSpec(runtime=RUNC, name_prefix="iso-runc"), COLLECTOR),
    (PodSpec(runtime=RUNC, name_prefix="unf", seccomp="Unconfined"), "unfiltered"),
    (PodSpec(runtime=RUNC, name_prefix="nocap", drop_capabilities=["ALL"],
             seccomp="Unconfined"), "nocap"),
    (PodSpec(runtime=RUNC, name_prefix="esc-r", drop_capabilities=["ALL"], run_as_user=NOBODY,
             allow_privilege_escalation=False), "restricted"),
    (PodSpec(runtime=RUNC, name_prefix="esc-p", privileged=True, seccomp="Unconfined"),
     "privileged"),
])
def test_the_checks_pods_are_served_by_their_container(spec, container):
    assert variant_of(spec).container == container


@pytest.mark.parametrize("spec", [
    PodSpec(runtime=RUNC, command=["/bin/sh", "-c", "true"]),
    PodSpec(runtime=RUNC, privileged=True),  # privileged under RuntimeDefault: no variant
    PodSpec(runtime=RUNC, resources={"limits": {"memory": "64Mi"}}),
    PodSpec(runtime=RUNC, runtime_class_name="other"),
    PodSpec(runtime=RUNC, add_capabilities=["NET_ADMIN"]),
])
def test_other_pods_are_their_own(spec):
    assert variant_of(spec) is None


def test_manifest_holds_one_container_per_variant_sharing_the_reports_dir():
    body = cell_manifest(PodSpec(runtime=RUNC, node_name="n1"), "cell-1", "ns", "run", 30)
    containers = body["spec"]["containers"]
    assert [c["name"] for c in containers] == [v.container for v in VARIANTS]
    assert containers[0]["name"] == COLLECTOR and "readinessProbe" in containers[0]
    assert body["spec"]["nodeName"] == "n1"
    assert body["spec"]["runtimeClassName"] == RUNC.runtime_class
    by_name = {c["name"]: c["securityContext"] for c in containers}
    assert by_name["privileged"]["privileged"] is True
    assert by_name["restricted"]["runAsUser"] == NOBODY
    assert by_name["nocap"]["capabilities"] == {"drop": ["ALL"]}
    assert "volumes" not in body["spec"]  # a volume is a host path the escape checks see
    # the collector waits for every other container's reports (30 s in tenths)
    assert "-lt 300 ]" in containers[0]["command"][2]


def _log(*parts: tuple[str, str, str, str, str]) -> str:
    lines = []
    for key, code, out, err, _ in parts:
        lines += [f"{MARK} {key} out {code}", out, "", f"{MARK} {key} err", err, ""]
    return "\n".join(lines + [END, ""])


def test_log_parses_into_reports_with_their_problems():
    doc = {"uname": {"release": "6.1"}, "pids": [1, 7]}
    text = _log(("probe.json", "0", json.dumps(doc, indent=1), "", ""),
                ("probe.escape", "3", "", "cannot open /proc/self/exe", ""),
                ("unfiltered.json", "none", "", "", ""),
                ("nocap.json", "0", "not json", "", ""))
    reports = parse_log(text)
    assert reports[("probe", "json")].data == doc and reports[("probe", "json")].problem is None
    assert "exited 3" in reports[("probe", "escape")].problem
    assert "cannot open /proc/self/exe" in reports[("probe", "escape")].problem
    assert "no exit code" in reports[("unfiltered", "json")].problem
    assert "not JSON" in reports[("nocap", "json")].problem


def test_a_log_cut_short_is_an_error():
    with pytest.raises(ValueError, match="end marker"):
        parse_log(f"{MARK} probe.json out 0\n{{")


def test_the_containers_scripts_hand_every_report_to_the_collector(tmp_path):
    """The manifest's own shell scripts, run by busybox sh against a stand-in probe (paths
    moved into tmp_path): the collector prints every container's reports, then ends."""
    import shutil
    import subprocess

    sh = shutil.which("busybox")
    if sh is None:
        pytest.skip("needs busybox (apt-get install busybox-static)")
    probe = tmp_path / "probe"
    probe.write_text('#!/bin/sh\ncase "$1" in\n  sleep) exit 0;;\n'
                     '  escape) [ "$(basename "$0")" = probe ] && echo broken >&2 && exit 2;;\n'
                     'esac\necho "{\\"mode\\": \\"$1\\"}"\n')
    probe.chmod(0o755)
    reports = tmp_path / "reports"
    body = cell_manifest(PodSpec(runtime=RUNC), "cell", "ns", "run", 20)

    def run(container, background=False):
        script = container["command"][2].replace(REPORTS, str(reports)).replace(
            "/probe", str(probe))
        argv = [sh, "sh", "-c", script, container["command"][3]]
        if background:
            return subprocess.Popen(argv)
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)

    others = [run(c, background=True) for c in body["spec"]["containers"][1:]]
    collected = run(body["spec"]["containers"][0])
    for proc in others:
        proc.wait(timeout=60)
    assert collected.returncode == 0, collected.stderr
    found = parse_log(collected.stdout)
    assert sorted(found) == sorted((v.container, m) for v in VARIANTS for m in v.modes)
    assert found[("unfiltered", "json")].data == {"mode": "json"}
    assert "exited 2" in found[("probe", "escape")].problem
    assert (reports / "done").exists()


def test_one_describe_of_every_cell_pod_splits_by_pod():
    from sandcheck.clusters.kube import split_descriptions

    text = ("Name:             cell-runc-1\nNamespace:        ns\nRuntime Class Name:  runc\n"
            "Containers:\n  probe:\n    Name:  nested, indented\n\n\n"
            "Name:             cell-runsc-2\nRuntime Class Name:  gvisor\n")
    parts = split_descriptions(text)
    assert set(parts) == {"cell-runc-1", "cell-runsc-2"}
    assert "Runtime Class Name:  runc" in parts["cell-runc-1"]
    assert "gvisor" not in parts["cell-runc-1"] and "gvisor" in parts["cell-runsc-2"]
