"""Ginkgo's JUnit report (``--ginkgo.junit-report``) read into one result per spec.

Ginkgo names a spec ``[It] <container texts> <its text>`` and gives each testcase a
``status`` attribute: passed, failed, skipped, pending, panicked, interrupted, aborted,
timedout. A skip has ``<skipped message="skipped - REASON"/>``; a spec left out by
``--ginkgo.focus``/``--ginkgo.skip`` has the bare message ``skipped``. Suite nodes
(``[BeforeSuite]``, ``[AfterSuite]``, ...) are testcases too: their failure fails every spec.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from sandcheck.errors import ComponentError

FAILED = frozenset({"failed", "panicked", "interrupted", "aborted", "timedout"})
NOT_RUN = frozenset({"skipped", "pending", "disabled"})
PREFIXES = ("[It] ", "[k8s.io] ")
"""Ginkgo's node type and cri-tools' KubeDescribe tag, left out of spec names."""
EVIDENCE_CHARS = 4000


@dataclass(frozen=True)
class Spec:
    name: str
    status: str
    """passed, failed or skipped."""
    message: str = ""
    """The failure, or the reason of a skip."""
    seconds: float = 0.0
    filtered: bool = False
    """Not run: left out by a focus or skip expression."""
    output: str = ""
    """The tail of the spec's timeline (steps, logs) as ginkgo recorded it."""
    suite_node: bool = False
    """A [BeforeSuite]-like node, not a spec."""


def spec_name(testcase_name: str) -> str:
    name = testcase_name
    for prefix in PREFIXES:
        name = name.removeprefix(prefix)
    return name.strip()


def _text(element: ET.Element | None) -> str:
    return "" if element is None else (element.text or "")


def _spec(tc: ET.Element) -> Spec:
    raw = tc.get("name", "")
    status = tc.get("status") or ("failed" if tc.find("failure") is not None else "passed")
    output = (_text(tc.find("system-err")) + _text(tc.find("system-out")))[-EVIDENCE_CHARS:]
    seconds = float(tc.get("time") or 0)
    suite_node = not raw.startswith("[It]")
    if status in FAILED:
        failure = tc.find("failure")
        if failure is None:
            failure = tc.find("error")
        message = ((failure.get("message") or "") if failure is not None else status).strip()
        where = [line for line in _text(failure).splitlines() if line.startswith("In [")]
        if where:
            message = f"{message}\n{where[-1]}"
        return Spec(spec_name(raw), "failed", message[:EVIDENCE_CHARS], seconds,
                    output=output, suite_node=suite_node)
    if status in NOT_RUN:
        skipped = tc.find("skipped")
        reason = (skipped.get("message") if skipped is not None else "") or status
        filtered = reason.strip() == "skipped" or status == "pending"
        return Spec(spec_name(raw), "skipped", reason.removeprefix("skipped - ").strip(),
                    seconds, filtered=filtered, suite_node=suite_node)
    return Spec(spec_name(raw), "passed", "", seconds, suite_node=suite_node)


def read_junit(path: Path) -> list[Spec]:
    """Every testcase of the report, in its order."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise ComponentError(f"the JUnit report {path} cannot be read: {exc}") from None
    return [_spec(tc) for tc in root.iter("testcase")]
