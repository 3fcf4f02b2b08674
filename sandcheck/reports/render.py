"""Writes a run's reports: results.json, a self-contained report.html and summary.md.

The writers of each are page.py (HTML) and summary.py (Markdown); this puts the three
files side by side in the report directory.
"""

from __future__ import annotations

from pathlib import Path

from sandcheck.reports.densityview import write_png
from sandcheck.reports.page import render_html
from sandcheck.reports.results import Results
from sandcheck.reports.summary import render_markdown


def write_reports(results: Results, report_dir: Path) -> list[Path]:
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    json_path = report_dir / "results.json"
    results.write(json_path)
    html_path = report_dir / "report.html"
    html_path.write_text(render_html(results), encoding="utf-8")
    md_path = report_dir / "summary.md"
    md_path.write_text(render_markdown(results), encoding="utf-8")
    return [json_path, html_path, md_path, *write_png(results, report_dir)]
