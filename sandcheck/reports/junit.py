"""JUnit XML for checks pytest did not run in this process, and JUnit files joined.

pytest writes junit.xml at the end of its session, for the items it ran. A resumed run
deselects the items an interrupted run finished, and the interrupted run wrote no
junit.xml (it never reached its end), so their testcases are made here from the checks
the journal kept, in pytest's own form (classname and name from the nodeid, a ``failure``,
``error`` or ``skipped`` element with the check's message), and marked in ``system-out``
as carried. pytest's own testcases stay as they are, with their tracebacks and output.

Bundles merged (``sandcheck merge-bundles``) keep every input's testsuite as it is, one
``testsuite`` each under the one ``testsuites``, renamed after its shard.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from sandcheck.reports.results import Check

_COUNTS = ("tests", "failures", "errors", "skipped")
_ELEMENT = {"failed": ("failure", "failures"), "error": ("error", "errors"),
            "skipped": ("skipped", "skipped")}


def names_of(nodeid: str) -> tuple[str, str]:
    """(classname, name) as pytest's junitxml makes them from a nodeid (pure)."""
    path, _, rest = nodeid.partition("::")
    parts = [re.sub(r"\.py$", "", path.replace("/", ".")), *(rest.split("::") if rest else [])]
    return ".".join(parts[:-1]), parts[-1]


def testcase(check: Check, note: str = "") -> ET.Element:
    classname, name = names_of(check.nodeid or check.id)
    case = ET.Element("testcase", classname=classname, name=name,
                      time=f"{check.duration_seconds:.3f}")
    tag = _ELEMENT.get(check.status)
    if tag is not None:
        first = check.message.split("\n", 1)[0]
        attrs = {"type": "pytest.skip", "message": first} if check.status == "skipped" \
            else {"message": first}
        ET.SubElement(case, tag[0], attrs).text = check.message
    if note:
        ET.SubElement(case, "system-out").text = note
    return case


def _read(path: Path) -> ET.Element:
    if path.is_file():
        root = ET.parse(path).getroot()
        if root.tag == "testsuite":  # a lone testsuite (junit_family variants)
            wrapper = ET.Element("testsuites", name="pytest tests")
            wrapper.append(root)
            root = wrapper
        if root.find("testsuite") is not None:
            return root
    root = ET.Element("testsuites", name="pytest tests")
    ET.SubElement(root, "testsuite", name="pytest", errors="0", failures="0", skipped="0",
                  tests="0", time="0.000")
    return root


def _write(root: ET.Element, path: Path) -> None:
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def add_testcases(path: Path, checks: list[Check], note: str) -> int:
    """Put a testcase per check at the head of the file's first testsuite (the file is
    made if pytest wrote none), its counts and time updated; how many went in."""
    path = Path(path)
    root = _read(path)
    suite = root.find("testsuite")
    counts = {k: int(suite.get(k, "0")) for k in _COUNTS}
    seconds = float(suite.get("time", "0") or 0)
    for n, check in enumerate(checks):
        suite.insert(n, testcase(check, note))
        counts["tests"] += 1
        tag = _ELEMENT.get(check.status)
        if tag is not None:
            counts[tag[1]] += 1
        seconds += check.duration_seconds
    for key, value in counts.items():
        suite.set(key, str(value))
    suite.set("time", f"{seconds:.3f}")
    _write(root, path)
    return len(checks)


def merge_files(paths: list[Path], labels: list[str], out: Path) -> None:
    """One testsuites holding every input's testsuites, each named by its input's label."""
    merged = ET.Element("testsuites", name="pytest tests")
    for path, label in zip(paths, labels, strict=True):
        for suite in _read(Path(path)).findall("testsuite"):
            suite.set("name", label)
            merged.append(suite)
    _write(merged, Path(out))
