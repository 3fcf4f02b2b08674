"""The host syscall surface: the judge and the report (pure, on made-up sets), the
catalog's bounds and their overrides, and two impostors on the real node backend — a
handler that claims gVisor's profile but runs runc, and one that claims runc's but runs
runsc — which the security suite must fail, naming why.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import FAKE_RUNSC, skip_unless_node_backend

from sandcheck.catalog import Catalog
from sandcheck.errors import UserError
from sandcheck.judges.surface import Measured, differences, executor_roots, judge
from sandcheck.reports.results import Check, Results
from sandcheck.reports.surface import surface_markdown, surface_rows

ROOT = Path(__file__).resolve().parent.parent
SURFACE_SUITE = "suites/security/test_surface.py"
REACHABLE = "security.reachable_host_syscalls_stay_within_the_catalogs_bound"
EXERCISED = "security.exercised_host_syscalls_are_counted_and_allowed"


def test_executors_are_the_marked_workload_or_the_named_processes():
    tree = [(10, "containerd-shim-runc-v2"), (11, "probe"), (20, "runsc-sandbox"),
            (21, "runsc-gofer"), (22, "runsc")]
    assert executor_roots(tree, ("workload",), [11]) == [11]
    assert executor_roots(tree, ("runsc-sandbox", "runsc-gofer"), [11]) == [20, 21]
    assert executor_roots(tree, ("runsc-sandbox",), []) == [20]
    assert executor_roots(tree[:2], ("runsc-sandbox", "runsc-gofer"), []) == []


def test_judge_names_every_difference():
    expected = frozenset({"read", "write", "futex"})
    assert judge(Measured(expected, frozenset({"read"})), 3, frozenset({"mount"}),
                 expected) == []
    grown = judge(Measured(expected | {"execve"}), 3, frozenset(), expected)
    assert grown == ["4 host syscalls reachable, more than the catalog's bound of 3; "
                     "beyond the expected set: execve"]
    swapped = judge(Measured(frozenset({"read", "write", "ptrace"})), 3, frozenset(), expected)
    assert swapped == ["reachable beyond the catalog's expected set: ptrace"]
    never = judge(Measured(frozenset({"read", "mount"})), None, frozenset({"mount"}), None)
    assert never == ["reachable although the catalog says never: mount"]
    ghost = judge(Measured(expected, frozenset({"read", "mount"})), None, frozenset(), None)
    assert ghost and "mount" in ghost[0] and "reader or the tracer is wrong" in ghost[0]
    assert differences(frozenset({"a", "b"}), frozenset({"b", "c"})) == {
        "only_here": ["a"], "only_in_reference": ["c"]}


def test_catalog_bounds_native_and_gvisor_apart():
    runc, runsc = Catalog.load().select("runc,runsc")
    assert runc.isolation.surface.executors == ("workload",)
    assert {"mount", "bpf", "kexec_load", "open_by_handle_at"} <= runc.isolation.surface.never
    gv = runsc.isolation.surface
    assert set(gv.executors) == {"runsc-sandbox", "runsc-gofer"}
    assert gv.reachable_max == len(gv.expected) < runc.isolation.surface.reachable_max
    assert not gv.expected & gv.never


def test_catalog_file_sets_and_checks_a_surface(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[runtimes.mine]\nbase = "runc"\n[runtimes.mine.surface]\n'
                    'reachable_max = 200\nnever = ["ptrace"]\n')
    mine = Catalog.load(path).select("mine")[0].isolation.surface
    assert (mine.executors, mine.reachable_max, mine.never) == (("workload",), 200,
                                                                frozenset({"ptrace"}))
    path.write_text('[runtimes.vm]\nhandler = "vm"\nruntime_type = "io.containerd.x.v2"\n'
                    '[runtimes.vm.surface]\nreachable_max = 10\n')
    with pytest.raises(UserError, match="needs executors"):
        Catalog.load(path)
    path.write_text('[runtimes.mine]\nbase = "runc"\n[runtimes.mine.surface]\nnever = "x"\n')
    with pytest.raises(UserError, match="never must be a list"):
        Catalog.load(path)


def test_report_shows_counts_ratios_and_differences():
    def check(test: str, runtime: str, **sets) -> Check:
        return Check(id=test, runtime=runtime, status="passed",
                     evidence=[{"what": "x", **{k: sorted(v) for k, v in sets.items()}}])
    results = Results(checks=[
        check(REACHABLE, "runsc", reachable={"read", "futex"}),
        check(REACHABLE, "runc", reachable={"read", "write", "execve", "mount"}),
        check(EXERCISED, "runc", exercised={"read", "execve"}),
        check(EXERCISED, "runsc", exercised={"read", "futex"}),
    ])
    assert [r.runtime for r in surface_rows(results)] == ["runc", "runsc"]
    md = "\n".join(surface_markdown(results))
    assert "| runsc | 2 | 0.50× | 2 | 1.00× |" in md
    assert "- runsc, reachable, only runc: execve, mount, write" in md
    assert "- runsc, exercised, only runsc: futex" in md
    assert surface_markdown(Results()) == []


# -- impostors, for real -----------------------------------------------------------------------

IMPOSTORS = FAKE_RUNSC + """
# Claims runc's profile (base = "runc") while its handler runs gVisor.
[runtimes.fake-runc]
base = "runc"
handler = "fake-runc"
runtime_type = "io.containerd.runsc.v1"
options = { TypeUrl = "io.containerd.runsc.v1.options", ConfigPath = "{config_dir}/runsc.toml" }
binaries = ["runsc", "containerd-shim-runsc-v1"]
config_files = { "runsc.toml" = { runsc_config = { platform = "systrap", oci-seccomp = "true" } } }
"""


@pytest.mark.integration
def test_both_impostors_fail_the_surface_checks(tmp_path, run_suite):
    skip_unless_node_backend()
    catalog = tmp_path / "impostors.toml"
    catalog.write_text(IMPOSTORS)
    proc, checks = run_suite(SURFACE_SUITE, "--backend", "node", "--runtimes",
                             "fake-runsc,fake-runc", "--catalog", str(catalog))
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    for runtime, claimed in (("fake-runsc", "runsc-sandbox, runsc-gofer"),
                             ("fake-runc", "workload")):
        for test in (REACHABLE, EXERCISED):
            got = checks[(test, runtime)]
            assert got["status"] in ("failed", "error"), (runtime, test, got)
            assert f"as the catalog says {runtime} does ({claimed})" in got["message"], \
                got["message"]
