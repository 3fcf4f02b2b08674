"""Running a provisioning command (bounded, failing with a message that says why), and the
progress sink provisioning reports to unless a caller passes its own."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from sandcheck.errors import ComponentError, UserError
from sandcheck.progress import to_stderr

STDERR = to_stderr("provision")
"""The default progress sink of every provisioning step."""


def run(
    argv: Sequence[str],
    timeout: float,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess:
    """subprocess.run with captured text output; a missing program is the user's to fix, a
    failure or a timeout is the component's, with the output's tail as evidence."""
    try:
        proc = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError as exc:
        raise UserError(f"{argv[0]} not found: {exc}") from None
    except subprocess.TimeoutExpired:
        raise ComponentError(f"`{' '.join(argv)}` did not finish within {timeout:.0f}s") from None
    if check and proc.returncode != 0:
        raise ComponentError(
            f"`{' '.join(argv)}` failed ({proc.returncode}):\n{tail(proc.stderr or proc.stdout)}"
        )
    return proc


def tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
