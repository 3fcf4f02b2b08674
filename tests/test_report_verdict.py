"""The report's first screen: verdict lines, the start figure set against the CRI start,
ratios with their spread and "within noise" (pure logic, real rendering)."""

from __future__ import annotations

import re

from sandcheck.reports.page import render_html
from sandcheck.reports.results import Check, Metric, Results
from sandcheck.reports.spread import median_difference, median_ratio, ratio_text
from sandcheck.reports.startcompare import CRI_START, HEADLINE, compare_starts
from sandcheck.reports.summary import render_markdown

MIB = 1024 * 1024


def around(center: float, n: int = 10, width: float = 0.1) -> list[float]:
    return [center * (1 - width + 2 * width * i / (n - 1)) for i in range(n)]


def results(headline_runsc: float = 0.62) -> Results:
    return Results(
        environment={"backend": "local", "backend_level": "Kubernetes"},
        checks=[Check("isolation.kernel", "runc", "passed"),
                Check("isolation.kernel", "runsc", "failed", message="same kernel as node",
                      evidence=[{"what": "uname -r", "output": "6.1.0"}])],
        metrics=[Metric(HEADLINE, "runc", "seconds", around(0.32)),
                 Metric(HEADLINE, "runsc", "seconds", around(headline_runsc)),
                 Metric(CRI_START, "runc", "seconds", around(0.25)),
                 Metric(CRI_START, "runsc", "seconds", around(0.55)),
                 Metric("pss_per_pod_bytes", "runc", "bytes", around(8 * MIB, 4)),
                 Metric("pss_per_pod_bytes", "runsc", "bytes", around(52 * MIB, 4)),
                 Metric("burst_wall_seconds", "runc", "seconds", [1.1]),
                 Metric("burst_wall_seconds", "runsc", "seconds", [1.3])])


def test_a_difference_inside_the_noise_says_so():
    same = median_ratio(around(1.0), around(1.01))
    assert same.within_noise and "within noise" in ratio_text(same)
    slower = median_ratio(around(2.0), around(1.0))
    assert not slower.within_noise and ratio_text(slower).startswith("2.00× runc (95% CI")
    diff = median_difference(around(0.6), around(0.3))
    assert diff.low < 0.3 < diff.high and diff.low > 0


def test_headline_follows_the_runtime_within_tolerance():
    (ok,) = compare_starts(results(0.62))  # +300 ms headline, +300 ms CRI
    assert ok.follows and abs(ok.gap) < 0.01 and round(ok.tolerance, 6) == 0.075
    (hidden,) = compare_starts(results(0.33))  # the figure a 1 s relist would give
    assert hidden.follows is False
    assert "does NOT follow" in hidden.sentence() and "+10 ms" in hidden.sentence()


def test_html_opens_with_verdict_lines_that_link_failed_checks_to_their_evidence():
    page = render_html(results())
    verdict, matrix = page.index('id="verdict"'), page.index("<h2>Conformance</h2>")
    plots, tables = page.index("<h2>Plots</h2>"), page.index("<h2>Metrics</h2>")
    environment = page.index("<h2>Environment</h2>")
    assert verdict < matrix < plots < tables < environment
    assert "<details class=env-all>" in page
    anchor = re.search(r'href="#(check-isolation-kernel-runsc[^"]*)"', page).group(1)
    assert f'<details class="check failed" id="{anchor}">' in page
    line = page[verdict:matrix]
    assert "runsc" in line and "1 of 1 checks failed" in line
    assert "1.94× runc (95% CI" in line and "6.50× runc (95% CI" in line
    assert "Does the headline start show the runtime?" in line and "follows the runtime" in line


def test_plots_only_for_metrics_with_several_samples():
    page = render_html(results())
    assert 'alt="burst_wall_seconds"' not in page and f'alt="{HEADLINE}"' in page


def test_summary_md_gives_the_verdict_first_and_both_differences():
    md = render_markdown(results())
    assert md.index("## Verdict") < md.index("## Conformance") < md.index("## Metrics")
    assert "- ❌ **runsc**: 1 of 1 checks failed: `isolation.kernel`" in md
    assert "runsc − runc: headline start +300 ms (1.94×), CRI-level start +300 ms (2.20×)" in md


def test_a_run_with_nodes_gives_each_class_its_nodes_passed_failed_and_skipped():
    missing = "missing on node n2: RuntimeClass gvisor (handler runsc): not installed"
    run = Results(checks=[
        Check("isolation.kernel", "runc", "passed", node="n1"),
        Check("isolation.kernel", "runc", "passed", node="n2"),
        Check("isolation.kernel", "runsc", "failed", message="same kernel as node\nmore",
              node="n1"),
        Check("isolation.kernel", "runsc", "skipped", message=f"Skipped: {missing}", node="n2")])
    page, md = render_html(run), render_markdown(run)
    assert ('<div class="verdict v-passed"><b>runc</b><span class="what">2 of 2 nodes passed · '
            "0 failed</span>") in page
    assert ('<div class="verdict v-failed"><b>runsc</b><span class="what">0 of 2 nodes passed · '
            '<b class="bad">1 failed</b> · 1 skipped (class missing on 1)</span>') in page
    assert '<a href="#check-isolation-kernel-runsc-n1">isolation.kernel failed</a>' in page
    assert '<details class="check failed" id="check-isolation-kernel-runsc-n1">' in page
    assert ("- ✅ **runc**: 2 of 2 nodes passed · 0 failed · isolates as expected: 2 of 2 "
            "checks passed") in md
    assert ("- ❌ **runsc**: 0 of 2 nodes passed · 1 failed · 1 skipped (class missing on 1) · "
            "1 of 2 checks failed") in md
    assert ("- ❌ **runsc** `isolation.kernel` failed on 1 node: `n1` (first message: same "
            "kernel as node)") in md
    assert ("- ∅ **runsc** class missing on 1 node: `n2` (why: RuntimeClass gvisor (handler "
            "runsc): not installed)") in md
    # four cells: no fleet, so the matrix stays open and lists its failing cells
    assert '<details class="matrix"' not in page and "Above 50 cells" not in page
    assert "- ❌ fail `n1` × `runsc`: `isolation.kernel`" in md


def test_a_run_without_nodes_keeps_its_verdict_lines():
    page, md = render_html(results()), render_markdown(results())
    assert "nodes passed" not in page and 'class="groups"' not in page
    assert "nodes passed" not in md and "Failing nodes" not in md


KVM_REASON = ("runsc cannot start a sandbox on the KVM platform here: panic: error initializing "
              "vCPU(id=0) state: error setting system registers: invalid argument")


def five() -> Results:
    """runc, crun, youki, runsc and runsc-kvm, the last left out by the backend."""
    starts = {"runc": 0.27, "crun": 0.20, "youki": 0.27, "runsc": 0.45}
    memory = {"runc": 8, "crun": 7, "youki": 8, "runsc": 52}
    checks = [Check(f"isolation.{name}", rt, "passed")
              for rt in starts for name in ("kernel_identity", "default_capabilities")]
    checks += [Check("security.default_pod_shows_no_escape_precondition", rt, "passed")
               for rt in starts]
    checks += [Check("isolation.kernel_identity", "runsc-kvm", "skipped",
                     message=f"runsc-kvm cannot run on this node: {KVM_REASON}")]
    metrics = [Metric(HEADLINE, rt, "seconds", around(s)) for rt, s in starts.items()]
    metrics += [Metric("pss_per_pod_bytes", rt, "bytes", around(m * MIB, 4))
                for rt, m in memory.items()]
    metrics += [Metric("host_syscalls_reachable_count", "runc", "syscalls", [304.0]),
                Metric("host_syscalls_reachable_count", "runsc", "syscalls", [109.0])]
    profiles = {rt: {"kernel": "node"} for rt in ("runc", "crun", "youki")}
    profiles |= {"runsc": {"kernel": "own"}, "runsc-kvm": {"kernel": "own"}}
    return Results(environment={"backend": "node", "backend_level": "CRI",
                                "runtime_profiles": profiles,
                                "runtimes_not_runnable": {"runsc-kvm": KVM_REASON}},
                   checks=checks, metrics=metrics)


def test_five_runtimes_side_by_side_with_ratios_and_what_to_pick():
    from sandcheck.reports.pick import choices

    rows = {c.runtime: c for c in choices(five())}
    assert list(rows) == ["runc", "crun", "youki", "runsc", "runsc-kvm"]
    assert rows["runc"].start == "0.270 s (reference)"
    assert rows["crun"].start.startswith("0.200 s, 0.74× runc (95% CI")
    assert "within noise" in rows["youki"].start and "within noise" in rows["youki"].memory
    assert rows["runsc"].memory.startswith("52.0 MiB, 6.50× runc (95% CI")
    assert rows["runsc"].reachable == "109 (0.36×)" and rows["runc"].reachable == "304"
    assert rows["runsc"].kernel == "its own" and rows["youki"].kernel == "the node's"
    assert rows["youki"].isolation == "3/3 passed"
    assert rows["crun"].pick == ("trusted code: the node's kernel, starting faster than runc "
                                 "(when start time counts)")
    assert rows["youki"].pick == "trusted code: the node's kernel, starting as fast as runc"
    assert rows["runsc"].pick.startswith("untrusted or multi-tenant code")
    assert rows["runsc-kvm"].pick == f"not here: {KVM_REASON}"
    assert not rows["runsc-kvm"].runnable and rows["runsc-kvm"].isolation == "not run"


def test_the_pick_table_and_verdicts_render_for_five_runtimes():
    page, md = render_html(five()), render_markdown(five())
    assert page.index('id="verdict"') < page.index('id="pick"') < page.index(
        "<h2>Conformance</h2>")
    pick = page[page.index('id="pick"'):page.index("</section>", page.index('id="pick"'))]
    assert pick.count("<tr") == 6 and '<tr class="muted">' in pick  # header + five rows
    assert "<b>runsc-kvm</b>" in page and f"not runnable here: {KVM_REASON}" in page
    assert md.index("## Verdict") < md.index("## Which to pick") < md.index("## Conformance")
    assert f"- ⏭ **runsc-kvm**: not runnable here: {KVM_REASON}" in md
    assert "| youki | the node's | 3/3 passed | · | 0.270 s, ≈ runc (" in md
    for rt in ("crun", "youki", "runsc"):
        assert f"- ✅ **{rt}**: isolates as expected: 3 of 3 checks passed · start " in md
    # every runtime other than runc gets its own start comparison line when CRI starts exist
    with_cri = five()
    with_cri.metrics += [Metric(CRI_START, rt, "seconds", around(s)) for rt, s in
                         {"runc": 0.2, "crun": 0.15, "youki": 0.2, "runsc": 0.4}.items()]
    assert [c.runtime for c in compare_starts(with_cri)] == ["crun", "youki", "runsc"]


def test_a_pick_table_needs_two_runtimes():
    one = Results(checks=[Check("isolation.kernel_identity", "runc", "passed")])
    assert "Which to pick" not in render_markdown(one)
    assert 'id="pick"' not in render_html(one)


def test_a_declared_isolation_deviation_is_named_where_a_reader_picks():
    run = five()
    run.checks = [c for c in run.checks if not (c.runtime == "youki" and
                                                 c.id == "isolation.default_capabilities")]
    run.checks.append(Check("isolation.seccomp_runtime_default", "youki", "deviation",
                            message="declared deviation: exec'd processes get no filter"))
    from sandcheck.reports.pick import choices

    youki = {c.runtime: c for c in choices(run)}["youki"]
    assert youki.isolation == "2/3 passed, 1 declared deviation"
    assert youki.pick == ("trusted code: the node's kernel, starting as fast as runc; weaker "
                          "than its class where it deviates (seccomp_runtime_default)")
    md = render_markdown(run)
    assert "- ✅ **youki**: isolates, with declared deviations: 2 of 3 checks passed, 1 " \
           "declared deviation" in md
