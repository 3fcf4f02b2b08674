"""sandcheck as an installed library and tool: the wheel built from this checkout, installed
with its dependencies into a fresh venv outside the checkout, used from a directory that is
not the checkout.

- the wheel claims one import name: ``import fixtures`` (a PyPI distribution of its own),
  ``clusters``, ``reports`` and ``suites`` fail there, ``sandcheck.catalog`` imports;
- a vendor's ten-line test file using the ``probe`` fixture passes under plain pytest (the
  plugin arrives through the ``pytest11`` entry point, no conftest);
- ``sandcheck run --backend node --runtimes runc -k kernel`` runs the bundled suites.

The last two start the node backend (a private containerd, crictl, CNI) and skip, saying
why, where it cannot run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from sandcheck.provision.paths import cache_dir

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "setup.py", "README.md", "sandcheck", "suites")
GENERIC = ("fixtures", "clusters", "reports", "suites")

VENDOR_TEST = '''\
"""A vendor's own check: sandcheck's fixtures, no conftest, no checkout."""
import socket


def test_probe_reports_the_pods_kernel(runtime, probe, evidence):
    evidence.add(**probe.evidence("uname"))
    assert probe.data["uname"]["sysname"] == "Linux"
    assert probe.data["uname"]["release"]
    assert probe.data["uname"]["nodename"] != socket.gethostname()
'''


def _run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 600,
         ) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _shown(proc: subprocess.CompletedProcess) -> str:
    return (f"{' '.join(map(str, proc.args))} exited {proc.returncode}\n--- stdout:\n"
            f"{proc.stdout[-6000:]}\n--- stderr:\n{proc.stderr[-4000:]}")


class Installed:
    """A venv holding the wheel, and a working directory outside the checkout."""

    def __init__(self, base: Path, wheel: Path):
        self.base = base
        self.wheel = wheel
        self.venv = base / "venv"
        self.bin = self.venv / "bin"
        self.python = self.bin / "python"
        self.workdir = base / "work"
        self.workdir.mkdir()
        env = {k: v for k, v in os.environ.items()
               if k != "PYTHONPATH" and not k.startswith(("PYTEST_", "PIP_REQUIRE_VIRTUALENV"))}
        env["PATH"] = os.pathsep.join([str(self.bin), env.get("PATH", "/usr/bin:/bin")])
        env["VIRTUAL_ENV"] = str(self.venv)
        env["SANDCHECK_CACHE"] = str(cache_dir())
        self.env = env

    def run(self, *argv: str | Path, timeout: float = 600) -> subprocess.CompletedProcess:
        return _run([str(a) for a in argv], self.workdir, self.env, timeout)

    def py(self, code: str) -> subprocess.CompletedProcess:
        return self.run(self.python, "-c", code, timeout=120)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    base = tmp_path_factory.mktemp("wheel")
    assert not base.resolve().is_relative_to(ROOT), "the temp dir must lie outside the checkout"
    # Build from a copy: an in-tree build would leave build/ and *.egg-info in the checkout.
    src = base / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    dist = base / "dist"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(dist),
                  str(src)], base, env)
    assert built.returncode == 0, _shown(built)
    (wheel,) = dist.glob("sandcheck-*.whl")

    inst = Installed(base, wheel)
    venv.EnvBuilder(with_pip=True, clear=True).create(inst.venv)
    pip = inst.run(inst.python, "-m", "pip", "install", wheel, timeout=1200)
    assert pip.returncode == 0, _shown(pip)
    return inst


def test_wheel_holds_one_import_name(installed):
    with zipfile.ZipFile(installed.wheel) as whl:
        names = whl.namelist()
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        entry_points = whl.read(f"{dist_info}/entry_points.txt").decode()
    tops = {n.split("/", 1)[0] for n in names}
    assert tops == {"sandcheck", dist_info}, tops
    for part in ("catalog/__init__.py", "fixtures/plugin.py", "fixtures/probe/probe.c",
                 "reports/render.py", "suites/isolation/test_isolation.py"):
        assert f"sandcheck/{part}" in names, f"the wheel lacks sandcheck/{part}"
    assert "sandcheck.fixtures.plugin" in entry_points.split("[pytest11]", 1)[1], entry_points
    assert "sandcheck.cli.main:main" in entry_points


@pytest.mark.parametrize("name", GENERIC)
def test_generic_top_level_names_are_not_installed(installed, name):
    proc = installed.py(f"import {name}")
    assert proc.returncode != 0 and "ModuleNotFoundError" in proc.stderr, _shown(proc)


def test_the_package_imports_from_site_packages(installed):
    proc = installed.py("import sandcheck.catalog as c, sandcheck.fixtures.plugin, "
                        "sandcheck.suites; print(c.__file__)")
    assert proc.returncode == 0, _shown(proc)
    where = Path(proc.stdout.strip()).resolve()
    assert where.is_relative_to(installed.venv.resolve()), where
    proc = installed.run(installed.bin / "sandcheck", "catalog", timeout=120)
    assert proc.returncode == 0 and "runc" in proc.stdout, _shown(proc)


@pytest.fixture(scope="module")
def node_usable() -> None:
    if os.geteuid() != 0:
        pytest.skip("the node backend's private containerd needs root")
    from sandcheck.clusters import registry

    why = registry.entry("node").unavailable()
    if why:
        pytest.skip(f"the node backend cannot run here: {why}")


def _passed_checks(report_dir: Path) -> list[dict]:
    data = json.loads((report_dir / "results.json").read_text())
    return [c for c in data["checks"] if c["status"] == "passed"]


def test_a_vendor_test_file_uses_the_probe_fixture(installed, node_usable):
    test_file = installed.workdir / "test_vendor.py"
    test_file.write_text(VENDOR_TEST)
    report = installed.workdir / "vendor-report"
    proc = installed.run(installed.python, "-m", "pytest", test_file.name, "--backend", "node",
                         "--runtimes", "runc", "--report-dir", report, "-p", "no:cacheprovider")
    assert proc.returncode == 0, _shown(proc)
    assert "1 passed" in proc.stdout, _shown(proc)
    (check,) = _passed_checks(report)
    assert check["runtime"] == "runc" and check["evidence"], check


def test_sandcheck_run_passes_the_bundled_kernel_checks(installed, node_usable):
    report = installed.workdir / "run-report"
    proc = installed.run(installed.bin / "sandcheck", "run", "--backend", "node",
                         "--runtimes", "runc", "-k", "kernel", "--report-dir", report,
                         "-p", "no:cacheprovider")
    assert proc.returncode == 0, _shown(proc)
    passed = _passed_checks(report)
    assert passed and all("kernel" in c["id"] for c in passed), passed
