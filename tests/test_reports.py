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


# ---- a fleet: 1,000 nodes × 3 classes (tests/fleetgen.py) ----

@pytest.fixture(scope="module")
def fleets(tmp_path_factory) -> dict[int, tuple[Results, Path]]:
    """The synthetic fleet at 100 and 1,000 nodes (300 and 3,000 cells), reports written."""
    import fleetgen

    out = {}
    for nodes in (100, 1000):
        results = fleetgen.fleet_results(fleetgen.Fleet.of(nodes))
        report = tmp_path_factory.mktemp(f"fleet{nodes}")
        write_reports(results, report)
        out[nodes] = (results, report)
    return out


def _verdict_section(page: str) -> str:
    return page[page.index('<section id="verdict">'):page.index("</section>")]


def test_synthetic_fleet_is_shaped_like_a_certify_run(fleets):
    from sandcheck.reports.matrix import verdicts

    small, report = fleets[100]
    assert Results.read(report / "results.json").to_dict() == small.to_dict()
    back = fleets[1000][0]
    per_node = [c for c in back.checks if c.node]
    assert len({(c.node, c.runtime) for c in per_node}) == 3000
    assert all(c.runtime and c.nodeid.endswith(f"[{c.runtime}-node{int(c.node[-4:])}]")
               for c in per_node)
    assert {c.id.split(".")[0] for c in per_node} == {"isolation", "runtimeclass", "security"}
    assert len(per_node) // 3000 >= 20  # checks per cell
    cells = {(v.node, v.runtime): v.verdict for v in verdicts(back)}
    assert cells[("pool-a-node-0960", "runsc")] == "missing"
    assert cells[("pool-a-node-0250", "crun")] == "fail"


def test_fleet_verdict_counts_nodes_per_class(fleets):
    from sandcheck.reports.fleetview import class_tallies
    from sandcheck.reports.matrix import verdicts

    results, report = fleets[1000]
    tallies = class_tallies(verdicts(results))
    assert {rt: (t.passed, t.failed, t.missing, t.skipped) for rt, t in tallies.items()} == {
        "runc": (997, 3, 0, 0), "crun": (998, 2, 0, 0), "runsc": (660, 300, 40, 0)}
    lines = re.findall(r'<div class="verdict v-(\w+)"><b>(\w+)</b><span class="what">(.*?)'
                       r"</span>", _verdict_section((report / "report.html").read_text()))
    assert lines == [
        ("failed", "runc", '997 of 1,000 nodes passed · <b class="bad">3 failed</b>'),
        ("failed", "crun", '998 of 1,000 nodes passed · <b class="bad">2 failed</b>'),
        ("failed", "runsc", '660 of 1,000 nodes passed · <b class="bad">300 failed</b> · '
                            "40 skipped (class missing on 40)")]


def test_a_check_failing_on_300_nodes_reads_as_one_line(fleets):
    from sandcheck.reports.fleetview import MESSAGE_CHARS, NAMES_SHOWN, groups
    from sandcheck.reports.matrix import verdicts

    results, report = fleets[1000]
    found = groups(verdicts(results))
    assert [(g.runtime, g.verdict, len(g.checks), len(g.nodes)) for g in found] == [
        ("runsc", "fail", 1, 299), ("runc", "fail", 1, 3), ("crun", "fail", 21, 2),
        ("runsc", "fail", 2, 1), ("runsc", "missing", 0, 40)]
    assert found[0].checks == ("isolation.devices_minimal",)
    assert found[3].nodes == ["pool-a-node-0003"]  # fails a second check: a group of its own
    section = _verdict_section((report / "report.html").read_text())
    assert "Failing nodes: 305, in 4 groups of what failed" in section
    devices = section[section.index("isolation.devices_minimal failed"):]
    devices = devices[:devices.index('<div class="grp')]
    assert "on 299 nodes" in devices and f"+{299 - NAMES_SHOWN} more" in devices
    shown, hidden = devices.split('<details class="more">')
    assert shown.count("<code>") == NAMES_SHOWN and hidden.count("<code>") == 299 - NAMES_SHOWN
    assert "first message: AssertionError: runsc on pool-a-node-0000: devices beyond" in devices
    firsts = re.findall(r'<div class="first" title="[^"]*">[^:]+: ([^<]*)</div>', section)
    assert len(firsts) == 5 and all(len(html_unescape(f)) <= MESSAGE_CHARS for f in firsts)
    assert html_unescape(firsts[1]).endswith("…")  # runc's long message, cut
    assert "21 checks failed: isolation.capabilities_dropped_refuse_privileged_calls" in section
    assert "class missing <span" in section and "handler is not installed there" in section
    assert "Above 50 cells the report is a fleet&#x27;s" in section
    # every group links to a failure shown with its evidence further down
    page = (report / "report.html").read_text()
    for anchor in re.findall(r'<a href="#(check-[^"]+)"', section):
        assert re.search(rf'<details class="check (failed|error)" id="{anchor}">', page), anchor


def html_unescape(text: str) -> str:
    import html

    return html.unescape(text)


def test_fleet_matrix_is_collapsed_and_small_ones_stay_open(fleets, tmp_path):
    import fleetgen

    page = (fleets[1000][1] / "report.html").read_text()
    matrix = page[page.index('<details class="matrix"'):]
    matrix = matrix[:matrix.index("</details>")]
    assert "1,000 nodes × 3 classes: 2,655 pass · 305 fail · 40 missing" in matrix
    assert matrix.count("<tr><td><code>pool-a-node-") == 1000
    assert page.index('id="verdict"') < page.index('<details class="matrix"')
    small = fleetgen.fleet_results(fleetgen.Fleet.of(8, missing={7: "runsc"}))  # 24 cells
    write_reports(small, tmp_path)
    page = (tmp_path / "report.html").read_text()
    assert '<details class="matrix"' not in page and "<h2>Nodes × runtime classes</h2>" in page
    assert '<details class="check passed"' in page  # passing evidence inlined below 50 cells
    md = (tmp_path / "summary.md").read_text()
    assert "<details>" not in md and "- ∅ missing `pool-a-node-0007` × `runsc`" in md


def test_fleet_page_inlines_evidence_of_failures_only(fleets):
    from sandcheck.reports.fleetview import EVIDENCE_PER_CHECK

    results, report = fleets[1000]
    page = (report / "report.html").read_text()
    assert '<details class="check passed"' not in page
    kept = sum(c.status not in ("failed", "error") and bool(c.evidence) for c in results.checks)
    assert (f"{kept:,} passing and skipped checks carry evidence. Above 50 node × class "
            "cells it is not inlined here: it is in results.json (checks[].evidence)") in page
    devices = page[page.index("<h3><code>isolation.devices_minimal</code> [runsc]: 300 failures"):]
    devices = devices[:devices.index("</ul></details>")]
    shown, rest = devices.split('<details class="failmore">')
    assert shown.count('<details class="check failed"') == EVIDENCE_PER_CHECK
    assert rest.count('<li id="check-isolation-devices-minimal-runsc-pool-a-node-') == 297
    # per-node environment facts read as a handful of rows
    assert "996 × (pool-a-node-0001, pool-a-node-0002, pool-a-node-0003, … +993)" in page


def test_report_size_grows_no_faster_than_the_cells(fleets):
    sizes = {n: {f: (report / f).stat().st_size / (n * 3) for f in
                 ("results.json", "report.html", "summary.md")}
             for n, (_, report) in fleets.items()}
    small, big = sizes[100], sizes[1000]
    assert 0.9 < big["results.json"] / small["results.json"] < 1.1  # linear
    assert big["report.html"] <= small["report.html"]  # nothing per cell beyond the matrix
    assert big["summary.md"] <= small["summary.md"]
    assert (fleets[1000][1] / "report.html").stat().st_size < 2_000_000
    assert (fleets[1000][1] / "summary.md").stat().st_size < 400_000


def test_fleet_summary_md_opens_with_the_fleet_verdict(fleets):
    lines = (fleets[1000][1] / "summary.md").read_text().splitlines()
    assert lines[:10] == [
        "# sandcheck results", "",
        "**63,006 checks:** ✅ 53,906 passed, ❌ 324 failed, ⏭ 8,754 skipped, 💥 22 error · "
        "**0 metrics**", "",
        "## Verdict", "",
        "- ❌ **runc**: 997 of 1,000 nodes passed · 3 failed · 3 of 21,000 checks failed",
        "- ❌ **crun**: 998 of 1,000 nodes passed · 2 failed · 42 of 21,000 checks failed",
        "- ❌ **runsc**: 660 of 1,000 nodes passed · 300 failed · 40 skipped (class missing "
        "on 40) · 301 of 21,000 checks failed", ""]
    assert lines[10] == "**Failing nodes: 305**, in 4 groups of what failed:"
    assert lines[12].startswith(
        "- ❌ **runsc** `isolation.devices_minimal` failed on 299 nodes: `pool-a-node-0000`, "
        "`pool-a-node-0006`, `pool-a-node-0009`, `pool-a-node-0012`, `pool-a-node-0015`, "
        "`pool-a-node-0018`, … +293 more (first message: AssertionError: runsc on "
        "pool-a-node-0000: devices beyond the catalog's set: ['/dev/kmsg']")
    assert lines[16].startswith("- ∅ **runsc** class missing on 40 nodes: ")
    text = "\n".join(lines)
    assert text.index("## Verdict") < text.index("<details><summary>1,000 nodes × 3 classes")
    assert "- ❌ `isolation.devices_minimal` [runsc] on 300 nodes (first message: " in text
    assert "- ❌ fail `pool-a-node-0000`" not in text  # no per-cell list under the matrix
    skips = [line for line in lines if line.startswith("- ⏭")]
    assert 0 < len(skips) <= 21 * 3  # per check and class, not per cell (8,754 skips)


FIRST_SCREEN = """<script>
window.addEventListener("load", () => {
  const box = e => { const r = e.getBoundingClientRect();
    return {top: r.top, bottom: r.bottom, text: e.innerText.slice(0, 200)}; };
  const out = {verdicts: [...document.querySelectorAll("#verdict .verdict")].map(box),
               groups: [...document.querySelectorAll("#verdict .grp")].map(box),
               matrix: box(document.querySelector("details.matrix")),
               load_ms: performance.now()};
  const pre = document.createElement("pre"); pre.id = "layout";
  pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
});
</script>"""


def test_fleet_first_screen_in_chromium_shows_the_verdict_and_the_failing_nodes(fleets, tmp_path):
    """1280x900, as a fleet owner opens report.html: the three class lines and every group
    of failing nodes on the first screen, the matrix below them, collapsed."""
    from sandcheck.reports import screenshot as shot

    try:
        shot.find_browser()
    except UserError as exc:
        pytest.skip(str(exc))
    page = (fleets[1000][1] / "report.html").read_text()
    measured = tmp_path / "measured.html"
    measured.write_text(page.replace("</body>", FIRST_SCREEN + "</body>"))
    dom = shot.dump_dom(measured, 1280, 900)
    layout = json.loads(re.search(r'<pre id="layout">(.*?)</pre>', dom, re.S).group(1))
    assert [v["text"][:4] for v in layout["verdicts"]] == ["runc", "crun", "runs"]
    assert "660 of 1,000 nodes passed · 300 failed" in layout["verdicts"][2]["text"]
    assert len(layout["groups"]) == 5
    for line in layout["verdicts"] + layout["groups"]:
        assert 0 <= line["top"] and line["bottom"] <= 900, f"not on the first screen: {line}"
    assert "on 299 nodes" in layout["groups"][0]["text"]
    assert layout["matrix"]["top"] > layout["groups"][-1]["bottom"]
    assert layout["matrix"]["bottom"] - layout["matrix"]["top"] < 80  # closed
