"""sandcheck's pytest plugin in real inner pytest sessions: what it records, merges and gates.

The inner test files replace the ``backend`` fixture with a stand-in (the plugin records a
check for every test that uses a backend, whatever it is), so these runs exercise the
plugin's recording, xdist merging, baseline gate and report writing, not a runtime. The
inner sessions pass ``--backend kubeconfig`` with a placeholder kubeconfig file: that
backend's factory only checks its options and starts nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sandcheck.reports.results import Metric, Results

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent

CONFTEST = '''
import pytest


class StandIn:
    """Takes the backend's place: the plugin records every test that uses a backend."""

    name = "stand-in"


@pytest.fixture(scope="session")
def backend():
    return StandIn()
'''

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:1"}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
users: [{name: none, user: {}}]
current-context: none
"""


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    """run(*args) -> (RunResult, report dir): an inner pytest in a subprocess with exactly
    the plugins named here (xdist and sandcheck's), whatever this interpreter has installed."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)
    pytester.makeconftest(CONFTEST)
    kubeconfig = pytester.path / "placeholder.kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    report_dir = pytester.path / "report"

    def run(*args: str) -> tuple[pytest.RunResult, Path]:
        result = pytester.runpytest_subprocess(
            "-p", "xdist.plugin", "-p", "sandcheck.fixtures.plugin", "-p", "no:cacheprovider",
            "--backend", "kubeconfig", "--kubeconfig", str(kubeconfig), "--runtimes", "runc",
            "--report-dir", str(report_dir), *args, timeout=300)
        return result, report_dir

    return run


def _results(report_dir: Path) -> dict:
    return json.loads((report_dir / "results.json").read_text())


def _by_name(data: dict) -> dict[str, dict]:
    return {c["nodeid"].split("::", 1)[1]: c for c in data["checks"]}


WORKER_FILE = '''
import os

from sandcheck.reports.results import Metric


def test_measured(backend, runtime, evidence, record_metric):
    worker = os.environ.get("PYTEST_XDIST_WORKER", "controller")
    evidence.add("worker", worker)
    record_metric(Metric("{name}_seconds", runtime.name, "seconds", [0.1, 0.2, 0.3],
                         labels={{"worker": worker}}))


def test_{name}_fails(backend):
    assert "{name}" == "expected", "{name} went wrong"


def test_{name}_not_a_check():
    pass
'''


def test_xdist_workers_results_merge_into_one(inner, pytester):
    """Two files on two workers (--dist loadfile gives each worker one file): the
    controller's results.json holds both workers' checks, evidence and metrics, once."""
    pytester.makepyfile(test_alpha=WORKER_FILE.format(name="alpha"),
                        test_beta=WORKER_FILE.format(name="beta"))
    result, report_dir = inner("-n", "2", "--dist", "loadfile")
    result.assert_outcomes(passed=4, failed=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED

    data = _results(report_dir)
    checks = {c["nodeid"]: c for c in data["checks"]}
    assert sorted(checks) == [
        "test_alpha.py::test_alpha_fails", "test_alpha.py::test_measured[runc]",
        "test_beta.py::test_beta_fails", "test_beta.py::test_measured[runc]"]
    assert len(data["checks"]) == 4, "a check was merged twice"
    workers = set()
    for file in ("alpha", "beta"):
        measured = checks[f"test_{file}.py::test_measured[runc]"]
        assert measured["status"] == "passed" and measured["runtime"] == "runc"
        (ev,) = measured["evidence"]
        workers.add(ev["output"])
        failed = checks[f"test_{file}.py::test_{file}_fails"]
        assert failed["status"] == "failed" and f"{file} went wrong" in failed["message"]
    assert workers == {"gw0", "gw1"}, f"checks came from {workers}, not from two workers"

    metrics = {m["name"]: m for m in data["metrics"]}
    assert sorted(metrics) == ["alpha_seconds", "beta_seconds"]
    assert {m["labels"]["worker"] for m in metrics.values()} == {"gw0", "gw1"}
    assert metrics["alpha_seconds"]["summary"]["p50"] == pytest.approx(0.2)
    assert data["environment"]["backend"] == "kubeconfig"
    assert not (report_dir / ".parts").exists(), "workers' partial results left behind"
    assert {"report.html", "summary.md"} <= {p.name for p in report_dir.iterdir()}


METRIC_FILE = '''
from sandcheck.reports.results import Metric


def test_startup(backend, runtime, record_metric):
    record_metric(Metric("startup_total_seconds", runtime.name, "seconds", [1.0] * 5))
'''


def _baseline(path: Path, p50: float) -> Path:
    Results(environment={"backend": "node"},
            metrics=[Metric("startup_total_seconds", "runc", "seconds", [p50] * 5)]).write(path)
    return path


@pytest.mark.parametrize(("old_p50", "exit_code", "status"), [
    (0.5, pytest.ExitCode.TESTS_FAILED, "REGRESSED"),
    (1.0, pytest.ExitCode.OK, "ok"),
    (0.9, pytest.ExitCode.OK, "ok"),
], ids=["regressed", "same", "within-tolerance"])
def test_baseline_sets_the_exit_status(inner, pytester, old_p50, exit_code, status):
    """Every test passes; only the metric against the baseline decides the exit status
    (the built-in tolerance for *_seconds is +50%)."""
    pytester.makepyfile(test_metric=METRIC_FILE)
    baseline = _baseline(pytester.path / "old-results.json", old_p50)
    result, report_dir = inner("--baseline", str(baseline))
    result.assert_outcomes(passed=1)
    assert result.ret == exit_code, result.stdout.str()
    text = (report_dir / "baseline.txt").read_text()
    (line,) = [x for x in text.splitlines() if "startup_total_seconds[runc] p50" in x]
    assert line.split()[0] == status, text
    assert ("FAILED: startup_total_seconds[runc]" in text) == (status == "REGRESSED"), text
    result.stdout.fnmatch_lines(["*baseline comparison*"])


def test_unreadable_baseline_fails_the_run(inner, pytester):
    pytester.makepyfile(test_metric=METRIC_FILE)
    broken = pytester.path / "broken.json"
    broken.write_text("{not json")
    result, report_dir = inner("--baseline", str(broken))
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert "baseline not compared" in (report_dir / "baseline.txt").read_text()


SKIP_FILE = '''
import pytest

IN_CALL = "runsc not found on node: run `sandcheck provision --runtimes runsc`"
IN_SETUP = "needs a Kubernetes API: run with --backend local"


@pytest.fixture
def cluster_api(backend):
    pytest.skip(IN_SETUP)


def test_skips_in_call(backend, runtime):
    pytest.skip(IN_CALL)


def test_skips_in_setup(cluster_api):
    pass
'''


def test_skip_reasons_reach_results_and_reports(inner, pytester):
    pytester.makepyfile(test_skips=SKIP_FILE)
    result, report_dir = inner()
    result.assert_outcomes(skipped=2)
    in_call = "runsc not found on node: run `sandcheck provision --runtimes runsc`"
    in_setup = "needs a Kubernetes API: run with --backend local"

    checks = _by_name(_results(report_dir))
    assert checks["test_skips_in_call[runc]"]["status"] == "skipped"
    assert in_call in checks["test_skips_in_call[runc]"]["message"]
    assert checks["test_skips_in_setup"]["status"] == "skipped"
    assert in_setup in checks["test_skips_in_setup"]["message"]

    html = (report_dir / "report.html").read_text()
    for reason in (in_call, in_setup):
        assert reason in html, f"report.html lacks the skip reason {reason!r}"
    summary = (report_dir / "summary.md").read_text()
    for reason in (in_call, in_setup):
        assert reason in summary, f"summary.md lacks the skip reason {reason!r}:\n{summary}"


SUBCHECK_FILE = '''
import pytest


def test_upstream(backend, runtime, record_check):
    record_check("upstream.one", "passed", seconds=0.5)
    record_check("upstream.two", "deviation", "declared deviation (vendor docs): boom",
                 [{"what": "spec", "output": "timeline"}])
    record_check("upstream.three", "skipped", "not run offline: no digest")
    with pytest.raises(ValueError, match="not one of"):
        record_check("upstream.four", "flaky")
'''


def test_checks_that_are_not_pytest_items_are_recorded_with_their_own_status(inner, pytester):
    """An upstream suite's specs: each a check with the calling check's runtime, its own
    status (a deviation too) and evidence; reports count and list the deviation."""
    pytester.makepyfile(test_sub=SUBCHECK_FILE)
    result, report_dir = inner()
    result.assert_outcomes(passed=1)
    checks = {c["id"]: c for c in _results(report_dir)["checks"]}
    assert sorted(checks)[1:] == ["upstream.one", "upstream.three", "upstream.two"]
    assert sorted(checks)[0].endswith(".upstream")  # the calling check itself
    two = checks["upstream.two"]
    assert (two["status"], two["runtime"]) == ("deviation", "runc")
    assert two["evidence"] == [{"what": "spec", "output": "timeline"}]
    assert two["nodeid"] == "test_sub.py::test_upstream[runc]::upstream.two"
    assert checks["upstream.one"]["duration_seconds"] == 0.5
    summary = (report_dir / "summary.md").read_text()
    assert "## Declared deviations" in summary and "declared deviation (vendor docs)" in summary
    assert "1 declared deviation" in summary
    assert "1 deviation" in (report_dir / "report.html").read_text()


DEVIATION_FILE = '''
def test_seccomp_runtime_default(backend, runtime):
    assert 0 == 2, "Seccomp mode is 0"


def test_default_capabilities(backend, runtime):
    pass


def test_kernel_identity(backend, runtime):
    raise RuntimeError("the probe crashed")
'''

DEVIATION_CATALOG = """
[runtimes.runc.known_deviations]
"isolation.seccomp_runtime_default" = "vendor docs: exec'd processes are unfiltered"
"isolation.default_capabilities" = "vendor docs: an old release"
"isolation.kernel_identity" = "vendor docs: not an assertion"
"""


def test_a_declared_deviation_of_a_check_is_reported_as_such(inner, pytester):
    """A runtime's known_deviations: its failed assertion is a deviation (not a pass, and
    it fails nothing), a pass says the declaration can go, any other error stays one."""
    (pytester.path / "isolation").mkdir()
    (pytester.path / "isolation" / "test_iso.py").write_text(DEVIATION_FILE)
    catalog = pytester.path / "catalog.toml"
    catalog.write_text(DEVIATION_CATALOG)
    result, report_dir = inner("--catalog", str(catalog), "isolation")
    result.assert_outcomes(xfailed=1, xpassed=1, failed=1)
    checks = {c["id"]: c for c in _results(report_dir)["checks"]}
    seccomp = checks["isolation.seccomp_runtime_default"]
    assert seccomp["status"] == "deviation"
    assert seccomp["message"].startswith("declared deviation: vendor docs: exec'd processes")
    assert "observed: AssertionError: Seccomp mode is 0" in seccomp["message"]
    caps = checks["isolation.default_capabilities"]
    assert caps["status"] == "passed" and "remove it from the catalog" in caps["message"]
    assert checks["isolation.kernel_identity"]["status"] == "failed"
