"""One run of critest, cri-tools' CRI validation suite, against one runtime handler.

critest talks to containerd's CRI endpoint directly (``--runtime-endpoint``) and makes
every sandbox with ``--runtime-handler``; its JUnit report (``--ginkgo.junit-report``:
its own ``--report-dir`` writes nothing in v1.37.0) gives each spec's result. The run
goes in its own session, killed whole on timeout or interrupt, and what critest leaks on
the host (System V segments of its HostIpc specs) is removed after it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from sandcheck.clusters.errors import UserError
from sandcheck.clusters.host import sysvipc
from sandcheck.clusters.host.files import locked
from sandcheck.clusters.provision import pins
from sandcheck.clusters.provision.tools import CRITEST
from sandcheck.clusters.upstream.junit import Spec, read_junit

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
LOG_TAIL_CHARS = 4000
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


def offline_skips(focus: str | None) -> dict[str, str]:
    """The offline skips a run with ``focus`` (a regex) would otherwise have run."""
    return {text: why for text, why in OFFLINE_SKIPS.items()
            if focus is None or re.search(focus, text)}


def critest_binary() -> Path:
    binary = CRITEST.binaries()["critest"]
    if not os.access(binary, os.X_OK):
        raise UserError(f"critest is not built ({binary}): {INSTALL_HINT}")
    return binary


def skip_regex(texts: list[str]) -> str:
    """A ginkgo skip expression for the specs whose names contain one of ``texts``."""
    return "|".join(re.escape(t) for t in texts)


def critest_argv(binary: Path, endpoint: str, handler: str, report: Path,
                 focus: str | None = None) -> list[str]:
    argv = [str(binary), f"--runtime-endpoint={endpoint}", f"--image-endpoint={endpoint}",
            f"--runtime-handler={handler}", f"--ginkgo.junit-report={report}",
            "--ginkgo.no-color", f"--ginkgo.skip={skip_regex(list(OFFLINE_SKIPS))}"]
    if focus:
        argv.append(f"--ginkgo.focus={focus}")
    return argv


@dataclass
class CritestRun:
    argv: list[str]
    returncode: int | None
    """None: killed at the timeout."""
    seconds: float
    report: Path
    log: Path
    specs: list[Spec] = field(default_factory=list)
    host_cleanup: list[str] = field(default_factory=list)

    def log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-LOG_TAIL_CHARS:]
        except OSError:
            return ""


def run_critest(endpoint: str, handler: str, workdir: Path, timeout: float,
                focus: str | None = None) -> CritestRun:
    """critest against ``endpoint`` for ``handler``; the report and log land in
    ``workdir``, its working directory (the endpoints given override any crictl.yaml)."""
    binary = critest_binary()
    workdir = workdir.resolve()  # critest runs there: a relative report path would nest
    workdir.mkdir(parents=True, exist_ok=True)
    report, log = workdir / "junit.xml", workdir / "critest.log"
    report.unlink(missing_ok=True)
    argv = critest_argv(binary, endpoint, handler, report, focus)
    with locked(LOCK):
        return _run(argv, report, log, workdir, timeout)


def _run(argv: list[str], report: Path, log: Path, workdir: Path,
         timeout: float) -> CritestRun:
    shm_before = sysvipc.segments()
    start = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            returncode: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            returncode = None
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    seconds = time.monotonic() - start
    run = CritestRun(argv, returncode, seconds, report, log,
                     host_cleanup=sysvipc.remove_leaked(shm_before))
    if report.is_file():
        run.specs = read_junit(report)
    return run
