"""Report writers and the baseline gate on hand-built results (pure logic, real rendering)."""

from __future__ import annotations

import base64
import copy
import json
import math
import re
from pathlib import Path

import pytest

from sandcheck.cli.main import main
from sandcheck.errors import UserError
from sandcheck.reports import baseline as bl
from sandcheck.reports.render import write_reports
from sandcheck.reports.results import SCHEMA_VERSION, Check, Metric, Results

MIB = 1024 * 1024
EXTERNAL = re.compile(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", re.I)


def spread(center: float, n: int = 10) -> list[float]:
    """Deterministic samples around center, +-10%."""
    return [center * (0.9 + 0.2 * i / (n - 1)) for i in range(n)]


def sample_results() -> Results:
    env = {"host_kernel": "6.1.0-28-amd64", "cgroup_mode": "hybrid", "containerd": "1.6.20",
           "kubernetes": "v1.34.2", "backend": "local",
           "runtimes": {"runc": {"version": "1.1.5"}, "runsc": {"version": "20240807"}}}
    checks = [
        Check("isolation.kernel", "runc", "passed",
              [{"what": "uname -r", "output": "6.1.0", "command": ["uname", "-r"]}]),
        Check("isolation.kernel", "crun", "skipped", message="crun not found on node"),
        Check("isolation.kernel", "runsc", "failed", message="expected gVisor kernel <4.4.0>",
              evidence=[{"what": "pod status", "output": {"phase": "Running", "n": [1, 2]}},
                        {"what": "log", "output": "<b>bold</b>\n" + "x" * 20000},
                        {"what": "list", "output": ["a", {"b": 1}]}]),
        Check("lifecycle.exec", "crun", "error", message="pod never Ready"),
        Check("runtimeclass.catalog", None, "passed"),
    ]
    metrics = [
        Metric("startup_total_seconds", "runc", "seconds", spread(0.3)),
        Metric("startup_total_seconds", "crun", "seconds", spread(0.3)),
        Metric("startup_total_seconds", "runsc", "seconds", spread(0.6)),
        Metric("pss_per_pod_bytes", "runc", "bytes", spread(2 * MIB, 4)),
        Metric("pss_per_pod_bytes", "crun", "bytes", spread(2 * MIB, 4)),
        Metric("pss_per_pod_bytes", "runsc", "bytes", spread(40 * MIB, 4)),
    ]
    return Results(env, checks, metrics)


def scaled(results: Results, factor: float, runtime: str | None = None,
           name: str | None = None) -> Results:
    out = copy.deepcopy(results)
    for m in out.metrics:
        if runtime in (None, m.runtime) and name in (None, m.name):
            m.samples = [s * factor for s in m.samples]
    return out


# ---- render ----

def test_write_reports_writes_three_files_and_json_round_trips(tmp_path):
    results = sample_results()
    written = write_reports(results, tmp_path / "out")
    assert [p.name for p in written] == ["results.json", "report.html", "summary.md"]
    assert all(p.is_file() for p in written)
    back = Results.read(written[0])
    assert back.to_dict() == results.to_dict()
    assert json.loads(written[0].read_text())["schema_version"] == SCHEMA_VERSION


def test_summary_md_has_totals_tables_and_failures(tmp_path):
    md = (write_reports(sample_results(), tmp_path)[2]).read_text()
    assert "5 checks" in md and "2 passed" in md
    assert "| check | runc | crun | runsc | any |" in md
    assert "| `isolation.kernel` | ✅ | ⏭ | ❌ | · |" in md
    assert ("| `startup_total_seconds` | runsc | 10 | 0.600s | 0.654s | 2.00× runc (95% CI "
            "1.83–2.18) | 0 |") in md
    assert "| `startup_total_seconds` | crun | 10 | 0.300s | 0.327s | ≈ runc (" in md
    assert md.index("## Verdict") < md.index("## Conformance") < md.index("## Metrics")
    assert "| `pss_per_pod_bytes` | runsc | 4 | 40.0 MiB |" in md
    assert "- ❌ `isolation.kernel` [runsc]: expected gVisor kernel <4.4.0>" in md
    assert "- 💥 `lifecycle.exec` [crun]: pod never Ready" in md


def test_html_is_self_contained_with_plots_tables_and_escaped_evidence(tmp_path):
    page = (write_reports(sample_results(), tmp_path)[1]).read_text()
    assert not EXTERNAL.search(page)
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 2  # one seconds metric, one bytes metric
    assert all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    assert "<b>bold</b>" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page
    assert "characters cut" in page and "x" * 5000 not in page
    assert 'title="failed: expected gVisor kernel &lt;4.4.0&gt;"' in page
    assert "&quot;phase&quot;: &quot;Running&quot;" in page  # dict output pretty-printed
    assert "uname -r" in page and "20240807" in page  # command list, nested environment
    assert "median vs runc (95% CI)" in page and "2.00× runc (95% CI 1.83–2.18)" in page
    assert ">1/1<" in page and ">0/1<" in page  # per-runtime pass counts


def test_empty_results_render_without_plots(tmp_path):
    written = write_reports(Results(), tmp_path)
    page = written[1].read_text()
    assert "<h2>Plots</h2>" not in page and "<img" not in page
    assert "no checks were run" in page
    assert Results.read(written[0]).to_dict() == Results().to_dict()
    assert "0 checks" in written[2].read_text()


def test_nan_and_empty_samples_do_not_crash(tmp_path):
    results = Results(metrics=[
        Metric("startup_total_seconds", "runc", "seconds", [math.nan, math.nan]),
        Metric("startup_total_seconds", "runsc", "seconds", [0.5, math.nan, 0.7]),
        Metric("pss_per_pod_bytes", "runsc", "bytes", []),
        Metric("odd_metric", "runsc", "widgets", [math.inf, 3.0]),
    ])
    written = write_reports(results, tmp_path)
    page, md = written[1].read_text(), written[2].read_text()
    assert "n/a" in page and page.count("data:image/png;base64,") == 1
    assert "| `startup_total_seconds` | runsc | 2 | 0.600s |" in md
    assert "| `odd_metric` | runsc | 1 | 3.00 widgets |" in md


def test_no_ratio_column_without_runc(tmp_path):
    results = Results(metrics=[Metric("startup_total_seconds", "runsc", "seconds", [0.5])])
    page = write_reports(results, tmp_path)[1].read_text()
    assert "median vs runc" not in page


# ---- baseline ----

@pytest.fixture
def old_file(tmp_path) -> Path:
    path = tmp_path / "old.json"
    sample_results().write(path)
    return path


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tolerances.toml"
    path.write_text(text)
    return path


def test_identical_runs_pass(old_file):
    lines, failed = bl.gate(old_file, sample_results(), None)
    assert not failed
    assert sum(line.startswith("ok ") for line in lines) == 6
    assert "tolerances: built-in" in lines[0]


def test_tightened_tolerance_fails_naming_the_metric(tmp_path, old_file):
    new = scaled(sample_results(), 1.05, "runsc", "startup_total_seconds")
    assert not bl.gate(old_file, new, None)[1]
    tight = write_toml(tmp_path, '[metrics."startup_total_seconds"]\ntolerance = 0.02\n')
    lines, failed = bl.gate(old_file, new, tight)
    assert failed
    assert ("REGRESSED startup_total_seconds[runsc] p50 0.600s -> 0.630s "
            "(+5.0%, tolerance +2%)") in "\n".join(lines)
    assert lines[-1] == "FAILED: startup_total_seconds[runsc]"


def test_twice_as_slow_fails_and_reports_the_runc_ratio_too(old_file):
    lines, failed = bl.gate(old_file, scaled(sample_results(), 2.0, "runsc"), None)
    assert failed
    text = "\n".join(lines)
    assert ("REGRESSED startup_total_seconds[runsc] p50 0.600s -> 1.20s (+100.0%, "
            "tolerance +50%) | x runc 2.00 -> 4.00 (+100.0%)") in text
    assert "REGRESSED pss_per_pod_bytes[runsc] p50 40.0 MiB -> 80.0 MiB" in text
    assert "ok        startup_total_seconds[runc]" in text


def test_ratio_to_runc_mode_ignores_machine_speed_but_not_runtime_slowdown(tmp_path, old_file):
    ratio = write_toml(tmp_path, '[defaults]\nmode = "ratio-to-runc"\n')
    slower_machine = scaled(sample_results(), 2.0)
    assert bl.gate(old_file, slower_machine, None)[1]
    lines, failed = bl.gate(old_file, slower_machine, ratio)
    assert not failed, lines
    assert any(line.startswith("ok        startup_total_seconds[runsc] p50 x runc 2.00 -> 2.00")
               for line in lines)
    lines, failed = bl.gate(old_file, scaled(slower_machine, 1.6, "runsc"), ratio)
    assert failed
    assert ("REGRESSED startup_total_seconds[runsc] p50 x runc 2.00 -> 3.20 (+60.0%, "
            "tolerance +50%) | 0.600s -> 1.92s (+220.0%)") in lines


def test_ratio_mode_without_runc_reports_missing(tmp_path, old_file):
    per_metric = write_toml(tmp_path, '[metrics."startup_*_seconds"]\nmode = "ratio-to-runc"\n')
    new = sample_results()
    new.metrics = [m for m in new.metrics if m.runtime != "runc"]
    lines, failed = bl.gate(old_file, new, per_metric)
    assert not failed
    assert any(line.startswith("missing   startup_total_seconds[runsc]") and "no runc p50" in line
               for line in lines)


def test_missing_metric_is_reported_and_fails_only_on_request(tmp_path, old_file):
    new = sample_results()
    new.metrics = [m for m in new.metrics if m.key() != ("pss_per_pod_bytes", "runsc")]
    new.metrics.append(Metric("exec_seconds", "runc", "seconds", [0.01]))
    lines, failed = bl.gate(old_file, new, None)
    assert not failed
    assert "missing   pss_per_pod_bytes[runsc] p50 40.0 MiB (not in the new run)" in lines
    assert "new       exec_seconds[runc] p50 10.0ms (not in the baseline)" in lines
    strict = write_toml(tmp_path, "[defaults]\nfail_on_missing = true\n")
    lines, failed = bl.gate(old_file, new, strict)
    assert failed and "MISSING   pss_per_pod_bytes[runsc]" in "\n".join(lines)


def test_more_failed_samples_is_a_regression(tmp_path, old_file):
    new = sample_results()
    new.metric("startup_total_seconds", "crun").failures = 2
    lines, failed = bl.gate(old_file, new, None)
    assert failed
    assert any(line.startswith("REGRESSED startup_total_seconds[crun]")
               and "failures 0 -> 2 (tolerance +0)" in line for line in lines)
    lenient = write_toml(tmp_path, "[defaults]\nfailures = 2\n")
    assert not bl.gate(old_file, new, lenient)[1]


def test_improvement_is_reported(old_file):
    lines, failed = bl.gate(old_file, scaled(sample_results(), 0.5, "runsc"), None)
    assert not failed
    assert any(line.startswith("improved  startup_total_seconds[runsc]") for line in lines)


def test_statistic_override_uses_p95(tmp_path, old_file):
    tol = write_toml(tmp_path, '[metrics."startup_total_seconds"]\nstatistic = "p95"\n')
    lines, _ = bl.gate(old_file, sample_results(), tol)
    assert any(line.startswith("ok        startup_total_seconds[runsc] p95 0.654s -> 0.654s")
               for line in lines)


@pytest.mark.parametrize("content, words", [
    (None, "no such file"),
    ("{not json", "not valid JSON"),
    ("[1, 2]", "top level is a list"),
    (json.dumps({"schema_version": 99}), "schema_version 99"),
    (json.dumps({"schema_version": SCHEMA_VERSION, "metrics": [{"name": "x"}]}), "malformed"),
    (json.dumps({"schema_version": SCHEMA_VERSION, "metrics": [
        {"name": "x_seconds", "runtime": "runc", "unit": "s", "samples": "1"}]}), "malformed"),
])
def test_bad_baseline_is_a_one_line_user_error(tmp_path, content, words):
    path = tmp_path / "baseline.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UserError) as err:
        bl.gate(path, sample_results(), None)
    message = str(err.value)
    assert words in message and str(path) in message and "\n" not in message


@pytest.mark.parametrize("text, words", [
    ("[defaults]\nsecond = 0.5\n", "unknown key 'second'"),
    ('[metrics."startup_total_seconds"]\ntolerence = 0.3\n', "unknown key 'tolerence'"),
    ("[default]\nseconds = 0.5\n", "unknown key 'default'"),
    ('[defaults]\nmode = "ratio"\n', "mode = 'ratio' must be one of absolute, ratio-to-runc"),
    ('[defaults]\nstatistic = "p42"\n', "statistic = 'p42'"),
    ("[defaults]\nseconds = -1\n", "seconds = -1 must be a number >= 0"),
    ("[defaults]\nfailures = 0.5\n", "failures = 0.5 must be an integer"),
    ("[defaults\n", "not valid TOML"),
])
def test_bad_tolerances_name_the_key(tmp_path, text, words):
    path = write_toml(tmp_path, text)
    with pytest.raises(bl.ToleranceError) as err:
        bl.load_tolerances(path)
    assert isinstance(err.value, ValueError) and isinstance(err.value, UserError)
    assert words in str(err.value) and str(path) in str(err.value)


def test_tolerances_user_file_overrides_builtin(tmp_path):
    path = write_toml(tmp_path, '[defaults]\nbytes = 0.1\n[metrics."startup_total_seconds"]\n'
                      'tolerance = 0.3\nstatistic = "p95"\n')
    tol = bl.load_tolerances(path)
    assert tol.rule("pss_per_pod_bytes") == bl.Rule(tolerance=0.1)
    assert tol.rule("startup_total_seconds") == bl.Rule(tolerance=0.3, statistic="p95")
    assert tol.rule("startup_burst_seconds").tolerance == 0.5
    assert tol.rule("ops_count", "ops").tolerance == 0.5


def test_compare_files_exit_codes(tmp_path, old_file, capsys):
    same = tmp_path / "same.json"
    sample_results().write(same)
    slow = tmp_path / "slow.json"
    scaled(sample_results(), 2.0, "runsc").write(slow)
    assert bl.compare_files(old_file, same, None) == 0
    assert "6 ok" in capsys.readouterr().out
    assert bl.compare_files(old_file, slow, None) == 1
    assert "REGRESSED startup_total_seconds[runsc]" in capsys.readouterr().out
    with pytest.raises(UserError):
        bl.compare_files(old_file, tmp_path / "absent.json", None)


def test_cli_compare_exit_codes(tmp_path, old_file, capsys):
    slow = tmp_path / "slow.json"
    scaled(sample_results(), 2.0, "runsc").write(slow)
    assert main(["compare", str(old_file), str(old_file)]) == 0
    assert main(["compare", str(old_file), str(slow)]) == 1
    bad = write_toml(tmp_path, "[defaults]\nnope = 1\n")
    assert main(["compare", str(old_file), str(slow), "--tolerances", str(bad)]) == 2
    assert "unknown key 'nope'" in capsys.readouterr().err


# ---- screenshot helper ----

def test_screenshot_without_chromium_says_how_to_install(tmp_path, monkeypatch):
    from sandcheck.reports import screenshot as shot

    monkeypatch.setattr(shot.shutil, "which", lambda name: None)
    page = tmp_path / "report.html"
    page.write_text("<p>hi</p>")
    with pytest.raises(UserError, match=r"apt-get install -y chromium"):
        shot.screenshot(page, tmp_path / "out.png")
