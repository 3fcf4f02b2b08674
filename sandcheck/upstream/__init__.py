"""Upstream conformance suites (critest) run per runtime handler, offline, each spec judged
against the catalog's declared deviations."""
