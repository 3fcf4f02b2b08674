"""Registry credentials from the usual docker config, as ``docker login`` leaves them.

``$DOCKER_CONFIG/config.json`` (default ``~/.docker/config.json``): a per-registry
``credHelpers`` entry, else ``credsStore``, else the inline ``auths`` entry (``auth`` is
base64 ``user:password``; ``username``/``password`` also count). A helper is the program
``docker-credential-<name>``, asked with ``get`` and the server on stdin.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sandcheck.errors import UserError
from sandcheck.timeouts import TIMEOUTS


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str
    source: str
    """Where they came from (for messages; never the secret)."""


def config_file() -> Path:
    base = os.environ.get("DOCKER_CONFIG")
    return Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"


def _keys(host: str) -> list[str]:
    """The spellings docker uses for one registry in ``auths``."""
    return [host, f"https://{host}", f"http://{host}", f"https://{host}/v1/",
            f"https://{host}/v2/"]


def credentials_for(host: str, path: Path | None = None) -> Credentials | None:
    """The credentials for ``host``, or None when the config names none."""
    path = path or config_file()
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not readable as JSON ({exc}); fix or move it") from None
    helper = (config.get("credHelpers") or {}).get(host) or config.get("credsStore")
    if helper:
        return _from_helper(helper, host)
    for key in _keys(host):
        entry = (config.get("auths") or {}).get(key)
        if entry:
            return _from_entry(entry, f"{path} auths[{key!r}]")
    return None


def _from_entry(entry: dict, source: str) -> Credentials | None:
    if entry.get("auth"):
        try:
            user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            raise UserError(f"{source}: 'auth' is not base64 of user:password; run "
                            "`docker login` again") from None
        return Credentials(user, password, source)
    if entry.get("username"):
        return Credentials(entry["username"], entry.get("password", ""), source)
    if entry.get("identitytoken"):
        raise UserError(f"{source} holds an identity token (OAuth refresh), which "
                        "push-image does not exchange; log in with a user and password or "
                        "a registry token")
    return None


def _from_helper(helper: str, host: str) -> Credentials | None:
    program = f"docker-credential-{helper}"
    try:
        proc = subprocess.run([program, "get"], input=host, capture_output=True, text=True,
                              timeout=TIMEOUTS.command)
    except FileNotFoundError:
        raise UserError(f"the docker config names credential helper {helper!r} but "
                        f"{program} is not on PATH; install it or remove the entry") from None
    if proc.returncode != 0:
        if "credentials not found" in (proc.stdout + proc.stderr).lower():
            return None
        raise UserError(f"{program} get {host}: exit {proc.returncode}: "
                        f"{proc.stderr.strip() or proc.stdout.strip()}")
    try:
        answer = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise UserError(f"{program} get {host} did not answer JSON") from None
    return Credentials(answer.get("Username", ""), answer.get("Secret", ""), program)
