"""The report of a real run, as a reader's browser shows it: headless Chromium at 1280x900.

A PNG that exists proves nothing about what it shows, so the page is also laid out by the
same browser with a script that measures it: every per-runtime verdict line must sit on
the first screen, and at least one plot must be drawn at a readable size. The results
come from a real run: ``SANDCHECK_SCREENSHOT_RESULTS`` names a results.json (CI passes
the suite run's), else a short node-backend run (isolation and sequential starts of runc
and runsc) is made here. It belongs to the fuller run (``--full``); CI runs it on its own
step with the suite run's results and installs Chromium for it; without Chromium it skips
saying how to install it.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from sandcheck.clusters import registry
from sandcheck.errors import UserError
from sandcheck.reports import screenshot as shot
from sandcheck.reports.render import write_reports
from sandcheck.reports.results import Results

ROOT = Path(__file__).resolve().parent.parent
WIDTH, HEIGHT = 1280, 900
MEASURE = """<script>
window.addEventListener("load", () => {
  const box = e => { const r = e.getBoundingClientRect();
    return {top: r.top, bottom: r.bottom, width: r.width, height: r.height,
            text: e.innerText.slice(0, 300)}; };
  const out = {verdicts: [...document.querySelectorAll("#verdict .verdict")].map(box),
               plots: [...document.querySelectorAll(".plots img")].map(
                 i => ({...box(i), natural: i.naturalWidth}))};
  const pre = document.createElement("pre"); pre.id = "layout";
  pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
});
</script>"""


def _real_results(tmp_path: Path) -> Path:
    given = os.environ.get("SANDCHECK_SCREENSHOT_RESULTS")
    if given:
        return Path(given)
    missing = registry.entry("node").unavailable()
    if missing:
        pytest.skip(f"a real run needs the node backend: {missing}")
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "suites/isolation", "suites/performance/test_startup.py",
         "-k", "not burst", "--backend", "node", "--runtimes", "runc,runsc", "--perf-runs", "4",
         "--perf-warmup", "1", "-p", "no:cacheprovider", "-q", "--report-dir", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert (out / "results.json").is_file(), proc.stdout[-3000:] + proc.stderr[-2000:]
    return out / "results.json"


def png_size(png: Path) -> tuple[int, int]:
    data = png.read_bytes()[:24]
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    return struct.unpack(">II", data[16:24])


@pytest.mark.full  # .ci/run's screenshot step runs it on the suite run's results (--full)
def test_first_screen_of_a_real_report_shows_verdicts_and_plots(tmp_path):
    try:
        shot.find_browser()
    except UserError as exc:
        pytest.skip(str(exc))
    results = Results.read(_real_results(tmp_path))
    page = write_reports(results, tmp_path / "report")[1]
    png = shot.screenshot(page, tmp_path / "report.png", width=WIDTH, height=HEIGHT)
    assert png_size(png) == (WIDTH, HEIGHT) and png.stat().st_size > 20_000

    measured = tmp_path / "measured.html"
    measured.write_text(page.read_text().replace("</body>", MEASURE + "</body>"))
    layout = json.loads(re.search(r'<pre id="layout">(.*?)</pre>',
                                  shot.dump_dom(measured, WIDTH, HEIGHT), re.S).group(1))
    runtimes = results.runtimes()
    assert len(layout["verdicts"]) == len(runtimes)
    for runtime, line in zip(sorted(runtimes), sorted(layout["verdicts"],
                                                      key=lambda v: v["text"]), strict=True):
        assert line["text"].startswith(runtime), line
        assert 0 <= line["top"] and line["bottom"] <= HEIGHT, f"not on the first screen: {line}"
        assert line["width"] > 600 and line["height"] > 10
    assert any(p["natural"] > 0 and p["width"] > 300 and p["height"] > 100
               for p in layout["plots"]), layout["plots"]
