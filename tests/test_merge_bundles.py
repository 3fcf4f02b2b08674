"""``sandcheck merge-bundles``: the bundles of certify shards (disjoint ``--nodes`` against
one cluster) merged into the bundle one run over all their nodes would have written, and
every input it refuses. The shards' bundles are made from made-up results by the same
writers certify uses (helpers.shard)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from helpers import shard

from sandcheck.cli import certify
from sandcheck.cli.main import main
from sandcheck.errors import UserError
from sandcheck.reports.bundle import verify_bundle
from sandcheck.reports.merge import merge_bundles
from sandcheck.reports.results import Results


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
