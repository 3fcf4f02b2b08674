"""``sandcheck merge-bundles``: the bundles of certify shards (disjoint ``--nodes`` against
one cluster) merged into the bundle one run over all their nodes would have written, and
every input it refuses. The shards' bundles are made from made-up results by the same
writers certify uses."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from sandcheck.cli import certify
from sandcheck.cli.main import main
from sandcheck.errors import UserError
from sandcheck.reports.bundle import finish_bundle, verify_bundle
from sandcheck.reports.junit import add_testcases
from sandcheck.reports.merge import merge_bundles
from sandcheck.reports.render import write_reports
from sandcheck.reports.results import Check, Results

ADMISSION = ("suites/runtimeclass/test_runtimeclass.py::"
             "test_missing_runtime_class_is_rejected_at_admission")


def shard(path: Path, nodes: list[str], selector: str, *, uid: str = "uid-1",
          runtimes: str = "runc,runsc", admission: str = "passed", failing: str = "",
          selection: dict | None = None) -> Path:
    """A certify bundle of ``nodes``: two classes per node, one cluster-wide check."""
    checks = []
    for slot, node in enumerate(nodes):
        for rt in runtimes.split(","):
            nodeid = f"suites/isolation/test_isolation.py::test_kernel_identity[{rt}-node{slot}]"
            checks.append(Check(id="isolation.kernel_identity", runtime=rt, node=node,
                                status="failed" if node == failing else "passed",
                                message="AssertionError: boom" if node == failing else "",
                                nodeid=nodeid, duration_seconds=0.25))
    checks.append(Check(id="runtimeclass.missing_runtime_class_is_rejected_at_admission",
                        runtime=None, status=admission, nodeid=ADMISSION))
    env = {"backend": "kubeconfig", "backend_level": "Kubernetes", "kubernetes": "v1.34.12",
           "server": "https://10.0.0.1:6443", "cluster_uid": uid,
           "runtimes_selected": runtimes, "node_selection": selector, "pid": 4242,
           "node_fingerprints": {n: {"kernel": "6.1", "kubelet": "v1.34.12"} for n in nodes},
           "fleet_cells": {f"{n}/{rt}": "running" for n in nodes
                           for rt in runtimes.split(",")},
           "api_requests": {"per_node": 12.0}}
    results = Results(environment=env, checks=checks)
    write_reports(results, path)
    add_testcases(path / "junit.xml", checks, "")
    finish_bundle(path, selection or certify.SELECTION)
    return path


@pytest.fixture
def shards(tmp_path):
    return (shard(tmp_path / "a", ["n1", "n2"], "pool=a"),
            shard(tmp_path / "b", ["n3", "n4"], "pool=b"))


def test_merged_bundle_verifies_and_is_one_run_over_all_nodes(tmp_path, shards, capsys):
    out = tmp_path / "merged"
    assert main(["merge-bundles", str(out), *map(str, shards)]) == 0
    assert "2 bundles merged" in capsys.readouterr().out
    assert verify_bundle(out) == []
    assert certify.verify([str(out)]) == 0
    cert = json.loads((out / "certification.json").read_text())
    assert cert["verdict"] == "pass" and cert["selection"] == certify.SELECTION
    assert sorted((c["node"], c["runtime_class"]) for c in cert["cells"]) == [
        (n, rt) for n in ("n1", "n2", "n3", "n4") for rt in ("runc", "runsc")]
    cluster = json.loads((out / "cluster.json").read_text())
    assert sorted(cluster["node_fingerprints"]) == ["n1", "n2", "n3", "n4"]
    assert cluster["cluster_uid"] == "uid-1"
    assert cluster["node_selection"] == "pool=a ; pool=b"
    assert [(s["bundle"], s["nodes"], s["pid"]) for s in cluster["shards"]] == [
        ("a", 2, 4242), ("b", 2, 4242)]
    results = Results.read(out / "results.json")
    assert len(results.checks) == 9  # 8 node × class checks, the cluster-wide one once
    assert sorted(results.environment["fleet_cells"]) == sorted(
        f"{n}/{rt}" for n in ("n1", "n2", "n3", "n4") for rt in ("runc", "runsc"))
    assert "api_requests" not in results.environment  # per shard, under shards
    suites = ET.parse(out / "junit.xml").getroot().findall("testsuite")
    assert [(s.get("name"), s.get("tests")) for s in suites] == [
        ("a (--nodes pool=a)", "5"), ("b (--nodes pool=b)", "5")]
    for name in ("report.html", "summary.md"):
        assert "n4" in (out / name).read_text()


def test_a_cluster_wide_failure_in_any_shard_stays_a_failure(tmp_path):
    a = shard(tmp_path / "a", ["n1"], "pool=a")
    b = shard(tmp_path / "b", ["n2"], "pool=b", admission="failed", failing="n2")
    out = tmp_path / "merged"
    assert main(["merge-bundles", str(out), str(a), str(b)]) == 1  # the verdict: fail
    assert verify_bundle(out) == []
    results = Results.read(out / "results.json")
    clusterwide = [c for c in results.checks if c.node is None]
    assert [c.status for c in clusterwide] == ["failed"]
    cert = json.loads((out / "certification.json").read_text())
    assert cert["failing_cells"] == ["n2 × runc", "n2 × runsc"]


def test_overlapping_nodes_are_refused_naming_them(tmp_path, capsys):
    a = shard(tmp_path / "a", ["n1", "n2"], "pool=a")
    b = shard(tmp_path / "b", ["n2", "n3"], "pool=b")
    out = tmp_path / "merged"
    assert main(["merge-bundles", str(out), str(a), str(b)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"sandcheck: error: the bundles overlap on node(s) n2 (in {a} and {b}): "
                   "shards must select disjoint nodes (--nodes)")
    assert not out.exists()


def test_an_input_that_does_not_verify_is_refused(tmp_path, shards):
    (shards[1] / "summary.md").write_text("all green\n")
    with pytest.raises(UserError, match=r"b does not verify: summary.md: modified"):
        merge_bundles(tmp_path / "merged", list(shards))
    (shards[1] / "SHA256SUMS").unlink()  # e.g. an unfinished (interrupted) bundle
    with pytest.raises(UserError, match="SHA256SUMS: missing"):
        merge_bundles(tmp_path / "merged", list(shards))


@pytest.mark.parametrize("other, what", [
    ({"selection": {**certify.SELECTION, "version": "1"}}, "selection"),
    ({"runtimes": "runc"}, "runtimes"),
    ({"uid": "uid-2"}, "cluster"),
])
def test_shards_of_another_selection_runtimes_or_cluster_are_refused(tmp_path, other, what):
    a = shard(tmp_path / "a", ["n1"], "pool=a")
    b = shard(tmp_path / "b", ["n2"], "pool=b", **other)
    with pytest.raises(UserError, match=rf"differ in {what} "):
        merge_bundles(tmp_path / "merged", [a, b])


def test_the_output_must_be_new_and_the_inputs_two_or_more(tmp_path, shards):
    out = tmp_path / "merged"
    out.mkdir()
    (out / "x").write_text("")
    with pytest.raises(UserError, match="is not empty"):
        merge_bundles(out, list(shards))
    with pytest.raises(UserError, match="two bundles or more"):
        merge_bundles(tmp_path / "m2", [shards[0]])
    with pytest.raises(UserError, match="is not empty"):  # an input, say
        merge_bundles(shards[1], list(shards))
