"""One run of critest, cri-tools' CRI validation suite, against one runtime handler.

critest talks to containerd's CRI endpoint directly (``--runtime-endpoint``) and makes
every sandbox with ``--runtime-handler``; its JUnit report (``--ginkgo.junit-report``:
its own ``--report-dir`` writes nothing in v1.37.0) gives each spec's result. The run
goes in its own session, killed whole on timeout or interrupt, and what critest leaks on
the host (System V segments of its HostIpc specs) is removed after it.
"""

from __future__ import annotations

import os
from pathlib import Path

from sandcheck.errors import UserError
from sandcheck.host import sysvipc
from sandcheck.host.files import locked
from sandcheck.provision import pins
from sandcheck.provision.tools import CRITEST
from sandcheck.upstream.ginkgo import GinkgoRun, prepare, run_ginkgo, skip_regex

SUITE = "critest"
INSTALL_HINT = (f"run `sandcheck provision --upstream` (builds critest from cri-tools "
                f"{pins.CRI_TOOLS_VERSION})")
OFFLINE_SKIPS = {
    "public image with digest should be pulled and removed":
        "it pulls by the digest of the manifest cri-tools pushed upstream "
        "(gcr.io/k8s-staging-cri-tools/test-image-digest@sha256:9700f9a2...), which no image "
        "built on this machine can have",
}
"""Specs (by a text their names contain) that cannot pass without the internet, whatever
the runtime: left out of the run and reported skipped with the reason."""
LOCK = Path("/run/lock/sandcheck-critest.lock")
"""critest binds fixed host ports (12000-12003) and makes host IPC segments: one run at a
time on a machine, whichever sandcheck run or xdist worker it belongs to. In /run/lock, not
the work base: a file there reads as a run's leftover."""

QUICK = "preset:ci"
FOCUS_PRESETS = {
    QUICK: r"Security Context (bucket|NoNewPrivs|SeccompProfilePath)|NamespaceOption runtime "
           r"should support (HostPID|HostIpc|PodPID|ContainerPID)|PodSandbox runtime should "
           r"support sysctls|Container Mount|Image Manager|Networking|Runtime info|Idempotence",
}
"""Named focuses (``preset:NAME``; a bare ``@NAME`` would be read by pytest as a file of
arguments). ``preset:ci``: the specs about isolation (security context, namespaces,
sysctls, mounts), the offline pull path, host ports and idempotence, about 60 of them: runc
and runsc together in under two minutes here. It leaves out what only waits out timeouts
on runsc (port forwarding, HostNetwork, OOM: a minute each) and the basic container
lifecycle the other suites exercise too."""


def focus_regex(focus: str | None) -> str | None:
    """A ``--critest-focus`` value as the regex ginkgo gets (a preset's, or itself)."""
    if focus is None:
        return None
    if focus.startswith("preset:"):
        if focus not in FOCUS_PRESETS:
            raise UserError(f"--critest-focus {focus}: no such preset (known: "
                            f"{', '.join(FOCUS_PRESETS)}); or give a ginkgo focus regex")
        return FOCUS_PRESETS[focus]
    return focus


def critest_binary() -> Path:
    binary = CRITEST.binaries()["critest"]
    if not os.access(binary, os.X_OK):
        raise UserError(f"critest is not built ({binary}): {INSTALL_HINT}")
    return binary


def critest_argv(binary: Path, endpoint: str, handler: str, report: Path,
                 focus: str | None = None, nri_socket: Path | None = None) -> list[str]:
    argv = [str(binary), f"--runtime-endpoint={endpoint}", f"--image-endpoint={endpoint}",
            f"--runtime-handler={handler}", f"--ginkgo.junit-report={report}",
            "--ginkgo.no-color", f"--ginkgo.skip={skip_regex(list(OFFLINE_SKIPS))}"]
    if nri_socket is not None:
        argv.append(f"--nri-socket={nri_socket}")
    if focus:
        argv.append(f"--ginkgo.focus={focus}")
    return argv


def run_critest(endpoint: str, handler: str, workdir: Path, timeout: float,
                focus: str | None = None, nri_socket: Path | None = None) -> GinkgoRun:
    """critest against ``endpoint`` for ``handler``; the report and log land in
    ``workdir``, its working directory (the endpoints given override any crictl.yaml)."""
    binary = critest_binary()
    workdir, report = prepare(workdir)
    argv = critest_argv(binary, endpoint, handler, report, focus, nri_socket)
    with locked(LOCK):
        shm_before = sysvipc.segments()
        run = run_ginkgo(argv, workdir, timeout)
        run.host_cleanup = sysvipc.remove_leaked(shm_before)
    return run
