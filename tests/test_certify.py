"""Certifying a fleet: verdicts per node × class, the matrix, the bundle and its verification.

Pure tests over made-up results; the kind run at the end certifies a real two-worker
cluster (runsc on the first worker only) and tampers with the bundle it wrote.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from sandcheck.catalog import Catalog
from sandcheck.cli import certify
from sandcheck.clusters import registry
from sandcheck.clusters.fleet import means_missing, missing_reason
from sandcheck.clusters.kube import node_fingerprint
from sandcheck.reports.bundle import MANIFEST, finish_bundle, verify_bundle
from sandcheck.reports.matrix import matrix_markdown, verdicts
from sandcheck.reports.render import write_reports
from sandcheck.reports.results import Check, Results
from sandcheck.reports.summary import render_markdown

ROOT = Path(__file__).resolve().parent.parent
RUNSC = Catalog.load(None).select("runsc")[0]


def fleet_results() -> Results:
    missing = missing_reason("w2", RUNSC, "the handler is not installed there")
    checks = [
        Check(id="isolation.kernel_identity", runtime="runc", node="w1", status="passed"),
        Check(id="isolation.kernel_identity", runtime="runsc", node="w1", status="passed"),
        Check(id="isolation.devices", runtime="runsc", node="w1", status="failed",
              message="AssertionError: /dev/kmsg visible\nmore"),
        Check(id="isolation.kernel_identity", runtime="runc", node="w2", status="passed"),
        Check(id="isolation.kernel_identity", runtime="runsc", node="w2", status="skipped",
              message=missing),
        Check(id="isolation.devices", runtime="runsc", node="w2", status="skipped",
              message=f"Skipped: {missing}"),  # as pytest words it
        Check(id="runtimeclass.admission", runtime=None, status="passed"),
    ]
    env = {"backend": "kind", "kubernetes": "v1.34.12",
           "node_fingerprints": {"w1": {"kernel": "6.1.0", "kubelet": "v1.34.12",
                                        "container_runtime": "containerd://1.7.35"}}}
    return Results(environment=env, checks=checks)


def test_each_node_and_class_gets_its_verdict():
    got = {(v.node, v.runtime): v for v in verdicts(fleet_results())}
    assert set(got) == {("w1", "runc"), ("w1", "runsc"), ("w2", "runc"), ("w2", "runsc")}
    assert got[("w1", "runc")].verdict == "pass"
    assert got[("w1", "runsc")].verdict == "fail"
    assert got[("w1", "runsc")].failing == ["isolation.devices"]
    assert "/dev/kmsg visible" in got[("w1", "runsc")].reason
    assert got[("w2", "runsc")].verdict == "missing"  # not a failure of the node's runc
    assert "missing on node w2" in got[("w2", "runsc")].reason
    assert got[("w2", "runc")].verdict == "pass"


def test_a_cell_whose_checks_all_skip_for_another_reason_is_no_pass():
    v = verdicts(Results(checks=[Check(id="a.b", runtime="kata", node="n", status="skipped",
                                       message="no expectation")]))[0]
    assert (v.verdict, v.reason) == ("skipped", "no expectation")


def test_matrix_in_markdown_and_html_names_nodes_and_fingerprints(tmp_path):
    results = fleet_results()
    md = "\n".join(matrix_markdown(results))
    assert "| `w1` | ✅ pass | ❌ fail | 6.1.0 · v1.34.12 · containerd://1.7.35 |" in md
    assert "| `w2` | ✅ pass | ∅ missing |" in md
    assert "`isolation.devices`" in md
    assert "Nodes × runtime classes" in render_markdown(results)
    write_reports(results, tmp_path)
    assert "Nodes × runtime classes" in (tmp_path / "report.html").read_text()
    assert matrix_markdown(Results(checks=[Check(id="a.b", runtime="runc",
                                                 status="passed")])) == []


def test_results_written_before_the_node_field_still_read():
    data = fleet_results().to_dict()
    for c in data["checks"]:
        c.pop("node")
    assert Results.from_dict(data).checks[0].node is None


def test_missing_handler_messages_are_recognised():
    assert means_missing('failed to get sandbox runtime: no runtime for "runsc" is configured')
    assert means_missing("pod phase Failed (NodeAffinity Pod Predicate NodeAffinity failed)")
    assert not means_missing("probe exited 1 in p: boom")


def test_node_fingerprint_reads_node_status():
    info = SimpleNamespace(kernel_version="6.1", kubelet_version="v1.34.12",
                           container_runtime_version="containerd://1.7.35",
                           os_image="Debian", architecture="amd64")
    fp = node_fingerprint(SimpleNamespace(status=SimpleNamespace(node_info=info)))
    assert fp == {"kernel": "6.1", "kubelet": "v1.34.12",
                  "container_runtime": "containerd://1.7.35", "os_image": "Debian",
                  "architecture": "amd64"}


def make_bundle(path: Path) -> dict:
    results = fleet_results()
    write_reports(results, path)
    (path / "junit.xml").write_text("<testsuites/>\n")
    return finish_bundle(path, certify.SELECTION)


def test_bundle_holds_verdicts_cluster_info_and_a_manifest(tmp_path):
    cert = make_bundle(tmp_path)
    assert cert["verdict"] == "fail" and cert["failing_cells"] == ["w1 × runsc"]
    assert cert["selection"]["version"] == certify.CERTIFY_VERSION
    assert json.loads((tmp_path / "cluster.json").read_text())["kubernetes"] == "v1.34.12"
    listed = [line.split("  ", 1)[1] for line in (tmp_path / MANIFEST).read_text().splitlines()]
    assert listed == sorted(["certification.json", "cluster.json", "junit.xml",
                             "report.html", "results.json", "summary.md"])
    assert verify_bundle(tmp_path) == []
    # coreutils reads the same manifest
    proc = subprocess.run(["sha256sum", "-c", MANIFEST], cwd=tmp_path, capture_output=True)
    assert proc.returncode == 0


def test_verify_names_every_changed_missing_and_added_file(tmp_path):
    make_bundle(tmp_path)
    cert = json.loads((tmp_path / "certification.json").read_text())
    cert["verdict"] = "pass"
    (tmp_path / "certification.json").write_text(json.dumps(cert))
    (tmp_path / "summary.md").unlink()
    (tmp_path / "extra.txt").write_text("x")
    problems = verify_bundle(tmp_path)
    assert any(p.startswith("certification.json: modified") for p in problems)
    assert any(p.startswith("summary.md: listed") for p in problems)
    assert any(p.startswith("extra.txt: not listed") for p in problems)
    assert len(problems) == 3


def test_verify_refuses_a_manifest_that_escapes_the_bundle(tmp_path):
    make_bundle(tmp_path)
    with open(tmp_path / MANIFEST, "a") as f:
        f.write("0" * 64 + "  ../outside\n")
    assert any("malformed" in p for p in verify_bundle(tmp_path))
    (tmp_path / MANIFEST).unlink()
    assert verify_bundle(tmp_path)[0].startswith(f"{MANIFEST}: missing")


def test_verify_bundle_command_exit_codes(tmp_path, capsys):
    make_bundle(tmp_path)
    assert certify.verify([str(tmp_path)]) == 0
    assert "bundle intact; certification fail" in capsys.readouterr().out
    (tmp_path / "results.json").write_text("{}")
    assert certify.verify([str(tmp_path)]) == 1
    assert "TAMPERED results.json: modified" in capsys.readouterr().out
    assert certify.verify([str(tmp_path / "nope")]) == 2


def test_certify_runs_the_fixed_selection_per_node():
    args, extra = certify.certify_parser().parse_known_args(
        ["--bundle", "b", "--nodes", "pool=sandbox", "--backend", "kind"])
    argv = certify.pytest_args(args, extra, Path("/s"))
    assert argv[:2] == ["/s/isolation", "/s/runtimeclass"]
    assert argv[argv.index("-m") + 1] == "not performance"
    assert argv[argv.index("--nodes") + 1] == "pool=sandbox"
    assert "--junitxml=b/junit.xml" in argv and argv[-2:] == ["--backend", "kind"]


def test_certify_refuses_a_bundle_dir_in_use(tmp_path, capsys):
    (tmp_path / "old").write_text("x")
    assert certify.certify(["--bundle", str(tmp_path)]) == 2
    assert "is not empty" in capsys.readouterr().err


def test_nodes_needs_a_kubernetes_backend():
    proc = subprocess.run([sys.executable, "-m", "pytest", str(ROOT / "suites" / "isolation"),
                           "--backend", "node", "--nodes", "all", "--collect-only", "-q",
                           "-p", "no:cacheprovider"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT, timeout=120)
    assert proc.returncode != 0
    assert "--nodes needs a Kubernetes backend" in proc.stdout + proc.stderr


def test_nodes_parametrizes_runtime_checks_by_node_slot():
    proc = subprocess.run([sys.executable, "-m", "pytest", str(ROOT / "suites" / "isolation"),
                           "--backend", "kind", "--kind-workers", "2", "--nodes", "all",
                           "--runtimes", "runc", "--collect-only", "-q",
                           "-p", "no:cacheprovider"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT, timeout=120)
    ids = [line for line in proc.stdout.splitlines() if "test_kernel_identity" in line]
    assert [i.rsplit("[", 1)[1] for i in ids] == ["runc-node0]", "runc-node1]", "runc-node2]"]


# -- on this machine: a real two-worker kind cluster -----------------------------------------

needs_kind = pytest.mark.skipif(
    os.geteuid() != 0 or registry.entry("kind").unavailable() is not None,
    reason="needs root and `sandcheck provision --kind` (kind, docker.io, the node image)")


@needs_kind
@pytest.mark.integration
@pytest.mark.full  # .ci/run certifies a two-worker kind cluster (through its registry) itself
def test_certify_on_kind_reports_each_node_and_detects_tampering(tmp_path):
    bundle = tmp_path / "bundle"
    proc = subprocess.run(
        [sys.executable, "-m", "sandcheck.cli.main", "certify", "--bundle", str(bundle),
         "--backend", "kind", "--kind-workers", "2", "--runtimes", "runc,runsc",
         "--node-parallelism", "4", "-q"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=tmp_path, timeout=1200)
    cert = json.loads((bundle / "certification.json").read_text())
    cluster = cert["cells"][0]["node"].split("-control-plane")[0].split("-worker")[0]
    cells = {(c["node"].removeprefix(cluster + "-"), c["runtime_class"]): c["verdict"]
             for c in cert["cells"]}
    assert cells == {("control-plane", "runc"): "pass", ("control-plane", "runsc"): "missing",
                     ("worker", "runc"): "pass", ("worker", "runsc"): "pass",
                     ("worker2", "runc"): "pass", ("worker2", "runsc"): "missing"}, \
        proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert verify_bundle(bundle) == []
    (bundle / "summary.md").write_text("all green\n")
    assert verify_bundle(bundle) == ["summary.md: modified (its SHA-256 differs from "
                                     "SHA256SUMS)"]
