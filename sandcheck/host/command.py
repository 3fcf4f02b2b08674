"""Running one host command, bounded: the one wrapper that turns a failure into a message
a user can act on (a missing program is theirs to fix, a failure or a timeout is the
component's, with the output's tail as evidence)."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from sandcheck.errors import ComponentError, UserError

TAIL_LINES = 25


def run(argv: Sequence[str], timeout: float, env: Mapping[str, str] | None = None,
        check: bool = True, cwd: Path | None = None, input: str | None = None,
        what: str | None = None, tail_lines: int = TAIL_LINES) -> subprocess.CompletedProcess:
    """subprocess.run with captured text output. ``what`` names the call in errors
    (default: the command line in backquotes)."""
    what = what or f"`{' '.join(argv)}`"
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              env=dict(env) if env is not None else None, cwd=cwd,
                              input=input,
                              stdin=subprocess.DEVNULL if input is None else None)
    except FileNotFoundError as exc:
        raise UserError(f"{argv[0]} not found: {exc}") from None
    except subprocess.TimeoutExpired:
        raise ComponentError(f"{what} did not finish within {timeout:.0f}s") from None
    if check and proc.returncode != 0:
        raise ComponentError(f"{what} failed ({proc.returncode}):\n"
                             f"{tail(proc.stderr or proc.stdout, tail_lines)}")
    return proc


def tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
