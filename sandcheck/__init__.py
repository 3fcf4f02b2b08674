"""sandcheck: a conformance and overhead suite for sandboxed container runtimes.

Every module lives at the path its import names (``sandcheck.clusters.node`` is
``sandcheck/clusters/node.py``); the checks are the checkout's ``suites/``, shipped in a
wheel as ``sandcheck.suites``.
"""

__version__ = "0.1.0"
