"""Runs from a checkout: makes ``sandcheck`` importable from here and loads its pytest
plugin unless an installed sandcheck (``pip install -e .``) already registered it through
the ``pytest11`` entry point."""

import os
import sys
from importlib.metadata import entry_points
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

_AUTOLOADED = not os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD") and any(
    ep.value == "sandcheck.fixtures.plugin" for ep in entry_points(group="pytest11"))
pytest_plugins = [] if _AUTOLOADED else ["sandcheck.fixtures.plugin"]
