"""The soak's pure logic and its counting of real host state: the growth fit (a leak found,
a warm-up, a transient and a breathing heap not taken for one), the --soak options, the
footprint read off this machine's /proc, /sys and a directory of its own, and the report's
soak section rendered. The soak itself against a real containerd: tests/test_soak_run.py."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from sandcheck.fixtures.soakplan import SoakPlan, parse_length
from sandcheck.host.footprint import Footprint, is_count, read
from sandcheck.judges.growth import MIN_SAMPLES, WARMUP_SAMPLES, fit, kendall_tau, theil_sen
from sandcheck.reports.page import render_html
from sandcheck.reports.results import Check, Results
from sandcheck.reports.soakview import SOAK_CHECK, rows
from sandcheck.reports.summary import render_markdown

MIB = 1024 * 1024
PODS = list(range(0, 210, 10))  # a baseline and 20 rounds of 10


def test_a_leak_of_one_mount_per_ten_pods_grew():
    values = [5 + p // 10 for p in PODS]
    t = fit("mounts", PODS, values, count=True)
    assert t.grew and t.slope == pytest.approx(0.1) and t.tau == pytest.approx(1.0)
    assert "mounts: " in t.sentence() and "+17.0 over 170 pods" in t.sentence()


def test_a_slow_leak_of_one_fd_per_fifty_pods_grew():
    values = [40 + p // 50 for p in PODS]
    t = fit("containerd_fds", PODS, values, count=True)
    assert t.grew, t.sentence()


def test_a_flat_count_with_one_transient_did_not_grow():
    values = [12] * len(PODS)
    values[9] = 13  # a mount seen once, while a sandbox was being torn down
    t = fit("mounts", PODS, values, count=True)
    assert t.judged and not t.grew and t.slope == 0


def test_growth_during_the_warm_up_only_did_not_grow():
    values = [30, 45, 52] + [52] * (len(PODS) - 3)
    assert not fit("containerd_fds", PODS, values, count=True).grew


def test_a_breathing_heap_did_not_grow_and_a_leaking_one_did():
    breathing = [60 * MIB + (3 * MIB if i % 2 else -2 * MIB) for i in range(len(PODS))]
    assert not fit("containerd_rss_bytes", PODS, breathing, count=False).grew
    leaking = [60 * MIB + p * 100 * 1024 for p in PODS]  # 100 KiB per pod
    t = fit("containerd_rss_bytes", PODS, leaking, count=False)
    assert t.grew and "MiB" in t.sentence("bytes")


def test_too_few_counts_are_not_judged_and_say_how_many_are_needed():
    t = fit("mounts", [0, 10, 20, 30], [1, 2, 3, 4], count=True)
    assert not t.judged and not t.grew
    assert f"at least {MIN_SAMPLES}" in t.sentence()
    assert t.judged_from == 1 + WARMUP_SAMPLES


def test_the_robust_statistics():
    assert theil_sen(list(range(7)), [0, 1, 2, 100, 4, 5, 6]) == pytest.approx(1.0)
    assert kendall_tau([0, 1, 2, 3], [3, 2, 1, 0]) == pytest.approx(-1.0)
    assert kendall_tau([0, 1, 2], [5, 5, 5]) == 0
    assert theil_sen([1], [1]) is None and kendall_tau([1], [1]) is None


@pytest.mark.parametrize("text, pods, seconds", [("500", 500, None), ("90s", None, 90.0),
                                                  ("10m", None, 600.0), ("1.5h", None, 5400.0)])
def test_soak_lengths(text, pods, seconds):
    assert parse_length(text) == (pods, seconds)


@pytest.mark.parametrize("text", ["0", "ten", "10d", "-5", "5 m"])
def test_a_bad_soak_length_names_the_forms_it_takes(text):
    with pytest.raises(pytest.UsageError, match=r"--soak 500 .* --soak 10m"):
        parse_length(text)


def test_a_plan_describes_itself():
    plan = SoakPlan(pods=500, seconds=None, concurrency=2, round_pods=25)
    assert plan.describe() == "500 pods per runtime, 2 in flight, counted every 25 pods"


def test_the_footprint_of_this_process_and_a_directory_of_its_own(tmp_path: Path):
    ipam = tmp_path / "ipam" / "net"
    ipam.mkdir(parents=True)
    for name in ("10.0.0.2", "10.0.0.3", "last_reserved_ip.0", "lock"):
        (ipam / name).write_text("x")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    fp = Footprint(daemons={"me": os.getpid()}, mount_prefixes=(str(tmp_path),),
                   ipam_dir=str(tmp_path / "ipam"))
    before = read(fp)
    assert before["ipam_leases"] == 2 and before["mounts"] == 0 and before["me_fds"] > 0
    assert before["me_rss_bytes"] > MIB and before["me_threads"] >= 1
    fd = os.open(tmp_path, os.O_RDONLY)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(mnt)], check=True)
    try:
        after = read(fp)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
        os.close(fd)
    assert after["mounts"] == 1 and after["me_fds"] == before["me_fds"] + 1
    assert read(fp)["mounts"] == 0
    gone = read(Footprint(daemons={"gone": 2 ** 22 + 1}))
    assert not any(k.startswith("gone_") for k in gone), "a dead daemon reads as absent"
    assert is_count("mounts") and not is_count("shim_rss_bytes")


def _soak_results(leak: bool) -> Results:
    mounts = [4 + (p // 10 if leak else 0) for p in PODS]
    series = {"mounts": mounts, "containerd_rss_bytes": [50 * MIB] * len(PODS),
              "cgroups": [7] * len(PODS)}
    soak = {"runtime": "runc", "pods": PODS, "seconds": [float(p) for p in PODS],
            "series": series, "cycles": 200, "failed": 0}
    check = Check(SOAK_CHECK, "runc", "failed" if leak else "passed",
                  evidence=[{"what": "soak", "output": [], "soak": soak}])
    return Results(environment={"backend": "node"}, checks=[check])


def test_the_report_shows_what_grew_and_plots_the_counts():
    results = _soak_results(leak=True)
    table = {r[0]: r for r in rows(results.checks[0].evidence[0]["soak"])}
    assert table["mounts"][-1] == "GREW" and table["cgroups"][-1] == "flat"
    assert table["containerd_rss_bytes"][1] == "50.0 MiB"
    page = render_html(results)
    assert 'id="soak"' in page and 'alt="soak runc"' in page and "<td class=bad>GREW" in page
    md = render_markdown(results)
    assert "## Soak" in md and "| mounts | 4 | 7 | 24 | +17.0 | 1.00 | GREW |" in md
    assert "GREW" not in render_markdown(_soak_results(leak=False))


def test_a_daemons_thread_pool_filling_up_did_not_grow_and_a_thread_leak_did():
    pods = list(range(0, 44, 4))
    seen = [9, 14, 14, 12, 12, 13, 13, 13, 13, 14, 14]  # containerd's, a 40-pod local soak
    assert not fit("containerd_threads", pods, seen, count=True, pool=True).grew
    leaking = [12 + p // 4 for p in pods]
    assert fit("containerd_threads", pods, leaking, count=True, pool=True).grew


def test_one_more_fd_kept_once_did_not_grow():
    values = [13] * 10 + [14] * 11  # a connection kept from the tenth round on
    assert not fit("containerd_fds", PODS, values, count=True).grew
