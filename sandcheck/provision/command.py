"""The progress sink provisioning reports to unless a caller passes its own. Its commands
run through the one host command wrapper (sandcheck.host.command)."""

from __future__ import annotations

from sandcheck.progress import to_stderr

STDERR = to_stderr("provision")
"""The default progress sink of every provisioning step."""
