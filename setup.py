"""The package list, found rather than kept by hand: everything under sandcheck/, and the
checkout's suites/ shipped as ``sandcheck.suites`` (``sandcheck run`` and ``certify``
collect them from there). The rest of the metadata is in pyproject.toml."""

from setuptools import find_packages, setup

SUITES = ["sandcheck.suites", *(f"sandcheck.suites.{p}" for p in find_packages("suites"))]

setup(packages=[*find_packages(include=["sandcheck", "sandcheck.*"]), *SUITES],
      package_dir={"sandcheck.suites": "suites"})
