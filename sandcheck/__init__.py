"""sandcheck: the one import name of the project.

An installed wheel holds ``sandcheck.clusters``, ``sandcheck.fixtures``,
``sandcheck.reports`` and ``sandcheck.suites`` below this package. A checkout keeps them as
top-level folders (clusters/, fixtures/, reports/, suites/) beside this one, so the package
path is widened to the checkout's root: the same import names work in both.
"""

from pathlib import Path

__version__ = "0.1.0"

_HERE = Path(__file__).resolve().parent
if not (_HERE / "clusters").is_dir() and (_HERE.parent / "clusters" / "catalog.py").is_file():
    __path__.append(str(_HERE.parent))  # noqa: F821 (a package's own __path__)
