"""The density benchmark's pure logic: its options, steps, per-pod figures, the metrics'
keys per step, and the report's view (table, ratios to runc, the figure)."""

from __future__ import annotations

import json

import pytest
from helpers import skip_unless_node_backend

from sandcheck.clusters.local import kubelet
from sandcheck.errors import UserError
from sandcheck.fixtures.bench import StartSample
from sandcheck.fixtures.density import GIB, DensityStep, batches, budget_used, steps_within
from sandcheck.fixtures.perfoptions import MIB, DensityOptions, parse_steps
from sandcheck.reports import densityview
from sandcheck.reports.densityview import DROP, PER_GIB, PSS, START
from sandcheck.reports.results import Metric, Results
from sandcheck.reports.summary import render_markdown
from sandcheck.reports.tables import spread_vs_reference


class FakeConfig:
    def __init__(self, **options):
        self.options = options

    def getoption(self, name, default=None):
        return self.options.get(name, default)


def test_steps_parse_and_refuse_with_the_fix():
    assert parse_steps("10,30,60") == (10, 30, 60)
    for bad, words in (("10,x", "whole numbers"), ("0,5", "at least 1 pod"),
                       ("30,10", "must increase"), ("10,10", "must increase")):
        with pytest.raises(pytest.UsageError, match=words) as err:
            parse_steps(bad)
        assert "--density-steps 10,30,60" in str(err.value)


def test_density_options_from_config():
    opts = DensityOptions.from_config(FakeConfig(density_steps="2,4", density_parallelism=3,
                                                 density_memory_budget=512))
    assert opts == DensityOptions(steps=(2, 4), parallelism=3, memory_budget=512 * MIB)
    assert DensityOptions.from_config(FakeConfig()).steps == ()
    with pytest.raises(pytest.UsageError, match="--density-parallelism 0"):
        DensityOptions.from_config(FakeConfig(density_parallelism=0))
    with pytest.raises(pytest.UsageError, match="--density-memory-budget -1"):
        DensityOptions.from_config(FakeConfig(density_memory_budget=-1))


def test_steps_within_the_nodes_room_and_batches():
    assert steps_within((10, 30, 60), None) == ([10, 30, 60], None)
    assert steps_within((10, 30, 60), 40) == ([10, 30], 60)
    assert steps_within((10, 30), 5) == ([], 10)
    assert batches(7, 3) == [3, 3, 1]
    assert batches(0, 2) == []
    assert budget_used(1000, 400, 600) and not budget_used(1000, 401, 600)


def _sample(total: float | None, error: str | None = None) -> StartSample:
    return StartSample(runtime="runc", backend_start=total, first_exec=0.0, error=error)


def test_a_steps_figures_per_pod():
    step = DensityStep(target=4, samples=[_sample(0.3), _sample(0.5), _sample(None, "boom")],
                       pods=4, before=10 * GIB, after=10 * GIB - 40 * MIB)
    assert step.starts == [0.3, 0.5]
    assert step.failures == 1
    assert step.drop_per_pod == 10 * MIB
    assert step.pods_per_gib == pytest.approx(102.4)
    flat = DensityStep(target=4, samples=[], pods=4, before=GIB, after=GIB + 1)
    assert flat.drop_per_pod is None and flat.pods_per_gib is None
    busy = DensityStep(target=2, samples=[], pods=2, before=GIB, after=GIB - 280 * MIB,
                       others_moved=266 * MIB)
    assert busy.disturbed and busy.drop_per_pod is None and "moved 266 MiB" in busy.line()
    grown = DensityStep(target=60, samples=[], pods=60, before=GIB, after=GIB - 480 * MIB,
                        others_moved=40 * MIB)  # containerd's and kubelet's bookkeeping
    assert not grown.disturbed and grown.drop_per_pod == 8 * MIB
    assert "4 pods, 1 failed" in step.line()


def test_local_max_pods():
    assert kubelet.max_pods_checked(None) == kubelet.DEFAULT_MAX_PODS > 110
    assert kubelet.max_pods_checked(120) == 120
    with pytest.raises(UserError, match="--max-pods 300.*253"):
        kubelet.max_pods_checked(300)


def _metric(name, runtime, step, samples, unit="seconds"):
    return Metric(name=name, runtime=runtime, unit=unit, samples=samples,
                  labels={"step": str(step), "pods": str(step), "level": "CRI"})


def _results() -> Results:
    metrics = []
    for step, scale in ((10, 1.0), (30, 1.2)):
        metrics += [
            _metric(START, "runc", step, [0.25 * scale + i * 0.01 for i in range(step)]),
            _metric(START, "runsc", step, [0.5 * scale + i * 0.01 for i in range(step)]),
            _metric(PSS, "runc", step, [8 * MIB + i for i in range(step)], "bytes"),
            _metric(PSS, "runsc", step, [50 * MIB + i for i in range(step)], "bytes"),
            _metric(DROP, "runc", step, [7 * MIB], "bytes"),
            _metric(DROP, "runsc", step, [42 * MIB], "bytes"),
            _metric(PER_GIB, "runc", step, [146.0], "pods/GiB"),
            _metric(PER_GIB, "runsc", step, [24.4], "pods/GiB"),
        ]
    return Results(metrics=metrics)


def test_each_step_is_a_metric_of_its_own():
    results = _results()
    runsc30 = next(m for m in results.metrics
                   if m.key() == ("density_start_seconds[step=30]", "runsc"))
    assert results.metric("density_start_seconds[step=30]", "runc").labels["step"] == "30"
    assert spread_vs_reference(results, runsc30).startswith("1.67")  # runc step 30: not 2.5


def test_the_view_gives_a_row_per_step_and_runtime_with_ratios():
    rows = densityview.rows(_results())
    assert [(r[0], r[1]) for r in rows] == [("runc", "10"), ("runsc", "10"),
                                            ("runc", "30"), ("runsc", "30")]
    runsc = dict(zip(densityview.COLUMNS, rows[1], strict=True))
    assert runsc["start vs runc"].startswith("1.") and "95% CI" in runsc["start vs runc"]
    assert runsc["PSS vs runc"].startswith("6.") and "95% CI" in runsc["PSS vs runc"]
    assert runsc["MemAvailable vs runc"] == "6.00× runc"  # one figure a side: no interval
    assert runsc["pods/GiB"] == "24.4" and runsc["PSS/pod"] == "50.0 MiB"
    assert dict(zip(densityview.COLUMNS, rows[0], strict=True))["start vs runc"] == "reference"


def test_the_report_renders_the_density_section_and_figure(tmp_path):
    results = _results()
    page = densityview.density_html(results)
    assert '<h2 id="density">Density</h2>' in page and "data:image/png;base64," in page
    summary = render_markdown(results)
    assert "## Density" in summary and "| runsc | 30 | 30 |" in summary
    png = densityview.write_png(results, tmp_path)
    assert png and png[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert densityview.density_html(Results()) == "" and densityview.write_png(Results(),
                                                                               tmp_path) == []


@pytest.mark.integration
def test_density_benchmark_runs_on_the_node_backend(request, tmp_path, run_suite):
    """The benchmark for real: runc at 2 then 4 pods (--full: runc and runsc at 5 then 15),
    its metrics per step in results.json and its section in both reports."""
    skip_unless_node_backend()
    full = request.config.getoption("full")
    runtimes, steps = ("runc,runsc", "5,15") if full else ("runc", "2,4")
    proc, checks = run_suite("suites/performance/test_density.py", "--backend", "node",
                             "--runtimes", runtimes, "--density-steps", steps,
                             timeout=1800 if full else 600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = tmp_path / "report"
    results = json.loads((report / "results.json").read_text())
    metrics = results["metrics"]
    disturbed = {(c["runtime"], st["step"]): st["disturbed"] for c in results["checks"]
                 for item in c["evidence"] if isinstance(item.get("output"), list)
                 for st in item["output"] if isinstance(st, dict) and "disturbed" in st}
    for runtime in runtimes.split(","):
        assert checks[("performance.density", runtime)]["status"] == "passed"
        for step in steps.split(","):
            got = {m["name"]: m for m in metrics
                   if m["runtime"] == runtime and m["labels"].get("step") == step}
            assert set(got) == set(densityview.METRICS), (runtime, step, sorted(got))
            assert len(got[START]["samples"]) >= 2 and not got[START]["failures"]
            assert all(0 < s < 60 for s in got[START]["samples"]), got[START]["samples"]
            assert len(got[PSS]["samples"]) == int(step)  # every pod on the node, measured
            assert all(MIB < s < 512 * MIB for s in got[PSS]["samples"])
            if not disturbed[(runtime, int(step))]:  # a busy machine's steps have none
                assert got[PER_GIB]["samples"] and got[PER_GIB]["samples"][0] > 1
    page = (report / "report.html").read_text()
    assert '<h2 id="density">Density</h2>' in page and "memory per pod against pods" in page
    assert "## Density" in (report / "summary.md").read_text()
    assert (report / densityview.PNG_NAME).read_bytes()[:4] == b"\x89PNG"
