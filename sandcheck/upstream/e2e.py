"""One run of Kubernetes' e2e suite (``e2e.test`` of the pinned release) against a cluster.

e2e.test gets the cluster's kubeconfig and the skeleton provider (no cloud); its JUnit
report gives each spec's result. Which specs run is a ginkgo focus, named by a preset or
given as a regex; specs a backend cannot offer are left out with the reason
(``BACKEND_LIMITS``) and reported skipped. Pods the specs make without a RuntimeClass run
with the node's default handler, which on the local backend is the first of ``--runtimes``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sandcheck.errors import UserError
from sandcheck.host.files import read_or_empty
from sandcheck.provision.kubernetes import E2E
from sandcheck.provision.pins import KUBERNETES_VERSION
from sandcheck.provision.tools import GINKGO
from sandcheck.upstream.ginkgo import GinkgoRun, prepare, run_ginkgo, skip_regex

SUITE = "e2e"
INSTALL_HINT = (f"run `sandcheck provision --upstream` (builds e2e.test from Kubernetes "
                f"{KUBERNETES_VERSION} and the ginkgo CLI)")
RUNTIMECLASS = "preset:runtimeclass"
NODE = "preset:node"
QUICK_SPECS = "!Slow && !Serial && !Disruptive && !Flaky"


@dataclass(frozen=True)
class Focus:
    regex: str
    label_filter: str | None = None
    procs: int = 1
    """Parallel e2e.test processes (through the ginkgo CLI, as Kubernetes' CI runs them):
    most of a spec's time is waiting on pods, so a few run well side by side."""


FOCUS_PRESETS = {
    RUNTIMECLASS: Focus(r"\[sig-node\] RuntimeClass"),
    NODE: Focus(r"\[sig-node\]", f"NodeConformance && {QUICK_SPECS}", procs=4),
}
"""Preset -> what ginkgo runs. ``preset:runtimeclass``: the RuntimeClass
specs of sig-node (admission of a missing or deleted class, scheduling and overhead, the
API), seconds. ``preset:node``: sig-node's node conformance specs (pods, containers, probes,
lifecycle hooks, security contexts, volumes of the downward API, config maps and secrets),
less the slow, serial and disruptive ones, minutes."""

BACKEND_LIMITS: dict[str, dict[str, str]] = {
    "local": {
        "should run a Pod requesting a RuntimeClass with a configured handler":
            "it finds its handler (test-handler) by reading the host's "
            "/etc/containerd/config.toml through a privileged pod; the local backend's "
            "containerd is private to the run and configured elsewhere, though it has "
            "test-handler (sandcheck's runtimeclass suite runs a pod of every configured "
            "handler instead)",
        "should run a Pod requesting a RuntimeClass with scheduling without taints":
            "the same reading of the host's /etc/containerd/config.toml",
    },
}
"""Backend name -> spec text -> why that backend cannot run it; left out and reported
skipped. Only specs a backend cannot offer by design: a spec that merely fails is a
failure."""


def resolve_focus(focus: str | None) -> Focus:
    """An ``--e2e-focus`` value (unset: the RuntimeClass preset) as what ginkgo runs."""
    focus = focus or RUNTIMECLASS
    if focus.startswith("preset:"):
        if focus not in FOCUS_PRESETS:
            raise UserError(f"--e2e-focus {focus}: no such preset (known: "
                            f"{', '.join(FOCUS_PRESETS)}); or give a ginkgo focus regex")
        return FOCUS_PRESETS[focus]
    return Focus(focus)


STAND_IN_LIMITS = {
    "should not write to root filesystem":
        "it compares busybox ash's exact error text, and the stand-in busybox image's /bin/sh "
        "is bash (see sandcheck/upstream/criimages.py, bash_sh)",
}
"""Specs that read what only the upstream image has, not sandcheck's stand-in."""
DUMMY_LINK_SPEC = "PrivilegedPod [NodeConformance] should enable privileged commands"


def has_dummy_links(sys_module: Path = Path("/sys/module"),
                    modules: Path = Path("/lib/modules")) -> bool:
    """Whether this kernel can make a dummy network device: built in or loaded (in
    /sys/module), or a module it could load (nothing is loaded to find out)."""
    if (sys_module / "dummy").exists():
        return True
    release = modules / os.uname().release
    return any(release.glob("kernel/drivers/net/dummy.ko*")) or "dummy.ko" in read_or_empty(
        release / "modules.builtin")


def limits(backend: str, stand_in_images: bool = False,
           node_is_host: bool = False) -> dict[str, str]:
    """What a run cannot offer, a text of the specs' names -> why: by design of ``backend``,
    of sandcheck's stand-in images, and of this host's kernel when the node runs on it."""
    found = dict(BACKEND_LIMITS.get(backend, {}))
    if stand_in_images:
        found.update(STAND_IN_LIMITS)
    if node_is_host and not has_dummy_links():
        found[DUMMY_LINK_SPEC] = (
            "this host's kernel has no dummy network device (no dummy module built in, "
            "loaded or installed), and the spec makes one (`ip link add dummy1 type dummy`) "
            "in a privileged pod")
    return found


def e2e_binary() -> Path:
    return _built(E2E, "e2e.test")


def ginkgo_binary() -> Path:
    return _built(GINKGO, "ginkgo")


def _built(tool, name: str) -> Path:
    binary = tool.binaries()[name]
    if not os.access(binary, os.X_OK):
        raise UserError(f"{name} is not built ({binary}): {INSTALL_HINT}")
    return binary


def e2e_argv(binary: Path, kubeconfig: Path, report: Path, focus: Focus,
             skips: list[str], ginkgo: Path | None = None) -> list[str]:
    """e2e.test's command line, or with ``focus.procs`` > 1 the ginkgo CLI's running it on
    that many processes (ginkgo's options go to the CLI, e2e's after ``--``)."""
    e2e_flags = [f"--kubeconfig={kubeconfig}", "--provider=skeleton",
                 # Its default waits for kube-system pods this cluster may not have.
                 "--minStartupPods=0"]
    ginkgo_flags = [f"--focus={focus.regex}", "--no-color",
                    # Each spec's steps in the log as it runs: what a spec waits for shows.
                    "-v"]
    if skips:
        ginkgo_flags.append(f"--skip={skip_regex(skips)}")
    if focus.label_filter:
        ginkgo_flags.append(f"--label-filter={focus.label_filter}")
    if focus.procs > 1:
        assert ginkgo is not None
        return [str(ginkgo), f"--procs={focus.procs}", f"--output-dir={report.parent}",
                f"--junit-report={report.name}", *ginkgo_flags, str(binary), "--", *e2e_flags]
    return [str(binary), *e2e_flags, f"--ginkgo.junit-report={report}",
            *(f"--ginkgo.{flag.lstrip('-')}" for flag in ginkgo_flags)]


def run_e2e(kubeconfig: Path, workdir: Path, timeout: float, focus: Focus,
            skips: list[str]) -> GinkgoRun:
    """e2e.test with ``focus`` against the cluster of ``kubeconfig``, leaving out the specs
    whose names contain one of ``skips``; report and log land in ``workdir``."""
    binary = e2e_binary()
    ginkgo = ginkgo_binary() if focus.procs > 1 else None
    workdir, report = prepare(workdir)
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": os.environ.get("HOME", "/root")}
    argv = e2e_argv(binary, kubeconfig, report, focus, skips, ginkgo)
    return run_ginkgo(argv, workdir, timeout, env, log_name="e2e.log")
