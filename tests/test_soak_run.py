"""The soak against a real containerd: a short soak of runc pods on the node backend (200
pods of every runtime with --full) passes with every count flat, and the footprint it
counts sees a leak of exactly the kind the soak once found (a pod cgroup left per pod) as
growth."""

from __future__ import annotations

import pytest
from helpers import skip_unless_node_backend

from sandcheck.host.cgroups import make_subtree
from sandcheck.host.footprint import is_count, read
from sandcheck.judges.growth import fit

SOAK_CHECK = "performance.soak_leaves_nothing_behind"


@pytest.mark.parametrize("size", [
    pytest.param(("runc", "18", "2"), id="small"),
    pytest.param(("runc,crun,youki,runsc", "200", "10"), id="bigger", marks=pytest.mark.full),
])
def test_a_soak_on_the_node_backend_leaves_nothing_behind(run_suite, size):
    skip_unless_node_backend()
    runtimes, pods, every = size
    proc, checks = run_suite("suites/performance/test_soak.py", "--backend", "node",
                             "--runtimes", runtimes, "--soak", pods,
                             "--soak-sample-every", every, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    for runtime in runtimes.split(","):
        check = checks[(SOAK_CHECK, runtime)]
        assert check["status"] == "passed", check["message"]
        soak = next(e["soak"] for e in check["evidence"] if "soak" in e)
        assert soak["cycles"] == int(pods) and soak["failed"] == 0
        assert len(soak["pods"]) == 1 + int(pods) // int(every)
        assert {"containerd_rss_bytes", "containerd_fds", "mounts", "cgroups", "netns",
                "ipam_leases", "shim_processes"} <= set(soak["series"])


def test_the_footprint_counts_a_pod_cgroup_left_per_pod_as_growth(runc_node):
    footprint = runc_node.footprint()
    make_subtree(f"{runc_node.cgroup}/pods")  # as the first pod makes it
    pods, values = [], []
    for i in range(9):
        pods.append(i)
        values.append(read(footprint)["cgroups"])
        make_subtree(runc_node.pod_cgroup(f"leaked-{i}"))  # what delete_pod once left
    trend = fit("cgroups", pods, values, is_count("cgroups"))
    assert trend.grew, trend.sentence()
    assert trend.slope is not None and trend.slope >= 1
