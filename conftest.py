"""Puts the framework (clusters/, fixtures/, reports/) on the path for runs from a checkout
and loads sandcheck's pytest plugin and fixtures."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

pytest_plugins = ["fixtures.plugin", "fixtures.cluster", "fixtures.pods"]
