"""Where the bundled suites are: ``sandcheck.suites`` in a wheel or an editable install,
the checkout's ``suites/`` beside this package otherwise. Looked up, never imported: the
suites are pytest's to collect, and nothing in the package depends on them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from sandcheck.errors import UserError


def suites_dir() -> Path:
    spec = importlib.util.find_spec("sandcheck.suites")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations))).resolve()
    checkout = Path(__file__).resolve().parents[2] / "suites"
    if (checkout / "__init__.py").is_file():
        return checkout
    raise UserError("the bundled suites are missing (no sandcheck.suites and no suites/ "
                    "beside the package): reinstall sandcheck")
