"""One run of an upstream ginkgo suite binary (critest, Kubernetes' e2e.test).

The binary runs in its own session, killed whole at the timeout or on interrupt; its JUnit
report (``--ginkgo.junit-report``) gives each spec's result and its output goes to a log
kept beside the report.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sandcheck.host.files import read_or_empty
from sandcheck.upstream.junit import Spec, read_junit

LOG_TAIL_CHARS = 4000


def skip_regex(texts: list[str]) -> str:
    """A ginkgo skip expression for the specs whose names contain one of ``texts``."""
    return "|".join(re.escape(t) for t in texts)


@dataclass
class GinkgoRun:
    argv: list[str]
    returncode: int | None
    """None: killed at the timeout."""
    seconds: float
    report: Path
    log: Path
    specs: list[Spec] = field(default_factory=list)
    host_cleanup: list[str] = field(default_factory=list)
    """What the suite left on the host and was removed after it."""

    def log_tail(self) -> str:
        return read_or_empty(self.log)[-LOG_TAIL_CHARS:]

    def suite_failures(self) -> list[str]:
        """A failed [BeforeSuite]-like node fails every spec: name them."""
        return [f"{s.name}: {s.message}" for s in self.specs
                if s.suite_node and s.status == "failed"]


def run_ginkgo(argv: list[str], workdir: Path, timeout: float,
               env: Mapping[str, str] | None = None, log_name: str | None = None) -> GinkgoRun:
    """``argv`` (which must write ``workdir/junit.xml``) with ``workdir`` as its working
    directory and ``workdir/<log_name>`` (default: the binary's name, ``.log``) as its
    output."""
    report = workdir / "junit.xml"
    log = workdir / (log_name or f"{Path(argv[0]).name.removesuffix('.test')}.log")
    start = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                env=None if env is None else dict(env))
        try:
            returncode: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            returncode = None
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    run = GinkgoRun(argv, returncode, time.monotonic() - start, report, log)
    if report.is_file():
        run.specs = read_junit(report)
    return run


def prepare(workdir: Path) -> tuple[Path, Path]:
    """``workdir`` made absolute (the suite runs there: a relative report path would nest)
    and created, with no report of an earlier run: (workdir, its report path)."""
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    report = workdir / "junit.xml"
    report.unlink(missing_ok=True)
    return workdir, report
