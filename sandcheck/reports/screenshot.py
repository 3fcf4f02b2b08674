"""Headless Chromium screenshot of a report page, to look at the HTML as a reader would.

Every flag that would make Chromium reach the network (updates, sync, QUIC) is off, and a
throw-away profile keeps the user's browser state out of it.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from sandcheck.errors import UserError
from sandcheck.timeouts import TIMEOUTS

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    raise UserError("chromium not found on PATH (tried " + ", ".join(BROWSERS) +
                    "): install it with `apt-get install -y chromium`")


def screenshot(html: Path, png: Path, width: int = 1280, height: int = 2400) -> Path:
    html, png = Path(html).resolve(), Path(png).resolve()
    if not html.is_file():
        raise UserError(f"no such HTML file: {html}")
    png.parent.mkdir(parents=True, exist_ok=True)
    png.unlink(missing_ok=True)
    proc = _chromium(html, width, height, f"--screenshot={png}")
    if not png.is_file():
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise UserError(f"chromium exited {proc.returncode} without writing {png}: {tail}")
    return png


def dump_dom(html: Path, width: int = 1280, height: int = 900) -> str:
    """The page's DOM after load and its scripts ran, laid out in a ``width`` x ``height``
    window (a test injects a script that writes element sizes into the page)."""
    html = Path(html).resolve()
    proc = _chromium(html, width, height, "--dump-dom")
    if proc.returncode != 0 or not proc.stdout:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise UserError(f"chromium exited {proc.returncode} without a DOM of {html}: {tail}")
    return proc.stdout


def _chromium(html: Path, width: int, height: int, action: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="sandcheck-chromium-") as profile:
        argv = [find_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                f"--user-data-dir={profile}", action, f"--window-size={width},{height}",
                html.as_uri()]
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUTS.screenshot)
        except subprocess.TimeoutExpired as exc:
            raise UserError(f"chromium did not finish ({action}) within "
                            f"{TIMEOUTS.screenshot:.0f}s: {argv[0]}") from exc


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 3:
        sys.exit("usage: python -m reports.screenshot REPORT.html OUT.png")
    print(screenshot(Path(sys.argv[1]), Path(sys.argv[2])))
