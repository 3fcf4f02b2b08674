"""Runs from a checkout: loads sandcheck's pytest plugin unless an installed sandcheck
(``pip install -e .``) already registered it through the ``pytest11`` entry point. pytest
puts this folder on sys.path (rootdir conftest, prepend import mode), so ``sandcheck``
is the package directory beside this file."""

import os
from importlib.metadata import entry_points

_AUTOLOADED = not os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD") and any(
    ep.value == "sandcheck.fixtures.plugin" for ep in entry_points(group="pytest11"))
pytest_plugins = [] if _AUTOLOADED else ["sandcheck.fixtures.plugin"]
