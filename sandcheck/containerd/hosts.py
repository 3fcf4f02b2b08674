"""containerd's registry host configuration (``config_path``): where a pull of a host goes.

containerd reads ``<config_path>/<host>/hosts.toml``, else ``<config_path>/_default/
hosts.toml``, at every pull. A ``server`` there replaces the host itself, so with only
``_default`` written every pull, of any host, goes to that server and nowhere else; the
repository path is kept (``gcr.io/a/b:t`` -> ``<server>/v2/a/b/manifests/t``). containerd
1.x pulls plain HTTP from a server given as ``http://``.
"""

from __future__ import annotations

from pathlib import Path

import tomlkit

from sandcheck.oci.reference import on_this_machine

DEFAULT_HOST = "_default"


def route_all(config_path: Path, server: str) -> Path:
    """Send every pull to ``server`` (``http://127.0.0.1:PORT``); returns the file."""
    where = config_path / DEFAULT_HOST / "hosts.toml"
    where.parent.mkdir(parents=True, exist_ok=True)
    where.write_text(route_all_text(server))
    return where


def route_all_text(server: str) -> str:
    """``_default/hosts.toml`` sending every pull to ``server``."""
    return f'# every registry host: the run\'s registry\nserver = "{server}"\n'


def endpoints(config_path: Path) -> dict[str, list[str]]:
    """Host directory -> every endpoint its hosts.toml sends pulls to (server and hosts)."""
    return endpoints_of({hosts.parent.name: hosts.read_text()
                         for hosts in sorted(config_path.glob("*/hosts.toml"))})


def endpoints_of(files: dict[str, str]) -> dict[str, list[str]]:
    """The same from the files' texts by host directory (a node read from outside)."""
    found: dict[str, list[str]] = {}
    for host, text in files.items():
        data = tomlkit.parse(text).unwrap()
        found[host] = [*([data["server"]] if "server" in data else []), *(data.get("host") or {})]
    return found


def beyond(found: dict[str, list[str]], local: frozenset[str] = frozenset()) -> list[str]:
    """Endpoints that would reach beyond this machine (neither loopback nor one of the
    ``local`` hosts, such as a registry container's address), and hosts with no hosts.toml
    of their own when ``_default`` is missing (containerd would go to the host itself)."""
    bad = [f"{host}: {url}" for host, urls in found.items() for url in urls
           if not on_this_machine(endpoint_host(url), local)]
    if DEFAULT_HOST not in found:
        bad.append(f"{DEFAULT_HOST}: missing, so unlisted hosts are pulled from themselves")
    return bad


def endpoint_host(url: str) -> str:
    """``http://10.0.0.2:5000/x`` -> ``10.0.0.2:5000``."""
    return url.split("://", 1)[-1].split("/", 1)[0]
