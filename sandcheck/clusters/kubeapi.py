"""The Kubernetes API as the Kubernetes backends reach it: a client of the backend's own
kubeconfig, the typed APIs made from it, kubectl run against the same kubeconfig, the
message of an API refusal, and the wait for an object to be gone.

No process-wide default client is touched: each backend has its own, so two backends (or
a backend and the user's kubectl context) never share settings. Every request of the
client goes through the backend's ApiFlow (rate, in-flight bound, retries, counters:
sandcheck/clusters/apiflow.py), and kubectl's requests are counted there from its log.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sandcheck.clusters.apiflow import ApiFlow, FlowLimits
from sandcheck.errors import ComponentError, UserError
from sandcheck.timeouts import TIMEOUTS, wait_until


def kubectl_binary() -> str | None:
    """The kubectl `sandcheck provision --kubernetes` built, else PATH's."""
    from sandcheck.provision.kubernetes import KUBERNETES
    from sandcheck.provision.paths import path_dir

    for cand in (path_dir() / "kubectl", KUBERNETES.binaries()["kubectl"]):
        if cand.is_file():
            return str(cand)
    return shutil.which("kubectl")


_KLOG_ROUND_TRIP = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ "
                              r"round_trippers\.go:\d+\] (?P<message>.*)$")
_STRUCTURED = re.compile(r'"Response" verb="(?P<verb>\w+)" url="[^"]*" status="(?P<status>[^"]*)"')
_PLAIN = re.compile(r"^(?P<verb>[A-Z]+) \S+ ?(?P<status>.*?) in \d+ milliseconds")


def kubectl_requests(stderr: str) -> tuple[list[tuple[str, int | None]], str]:
    """(verb, status) of each request in kubectl's round-tripper log lines (status None:
    no answer), and ``stderr`` without those lines (pure). Reads kubectl >= 1.30's
    structured line (``"Response" verb="GET" url="..." status="200 OK"``) and the plain
    one of older releases (``GET https://... 200 OK in 3 milliseconds``)."""
    found: list[tuple[str, int | None]] = []
    kept: list[str] = []
    for line in (stderr or "").splitlines(keepends=True):
        m = _KLOG_ROUND_TRIP.match(line.rstrip("\n"))
        if m is None:
            kept.append(line)
            continue
        message = m.group("message")
        request = _STRUCTURED.search(message) or _PLAIN.match(message)
        if request is not None:
            code = request.group("status").split(" ", 1)[0]
            found.append((request.group("verb").upper(), int(code) if code.isdigit() else None))
    return found, "".join(kept)


def api_message(exc) -> str:
    """The message of an ApiException's Status body, else the body itself."""
    import json

    try:
        return json.loads(exc.body).get("message") or exc.body
    except (TypeError, ValueError, AttributeError):
        return str(exc.body)


def gone(read: Callable[[], object], timeout: float) -> bool:
    """Wait until ``read()`` answers 404; False when the wait runs out or the API fails."""
    from kubernetes.client.rest import ApiException

    def absent() -> bool | None:
        try:
            read()
        except ApiException as exc:
            if exc.status == 404:
                return True
        except Exception:
            return False
        return None

    try:
        return wait_until(absent, timeout, "object deletion", interval=TIMEOUTS.ready_poll)
    except ComponentError:
        return False


class KubeApi:
    """The API client of ``kubeconfig_path`` (set before ``connect()``) and what is made
    from it."""

    kubeconfig_path: Path | None
    api_client: Any
    _api_flow: ApiFlow | None = None

    @property
    def api_flow(self) -> ApiFlow:
        """The flow of this backend's requests, across reconnects (default limits unless
        ``limit_api`` set others)."""
        if self._api_flow is None:
            self._api_flow = ApiFlow(FlowLimits())
        return self._api_flow

    def limit_api(self, options: dict[str, Any]) -> None:
        """The limits of ``--api-qps``, ``--api-burst``, ``--api-max-in-flight`` (before
        ``connect()``); UserError for a bad value."""
        self._api_flow = ApiFlow(FlowLimits.from_options(options))
        if getattr(self, "api_client", None) is not None:  # already connected
            self._api_flow.attach(self.api_client)

    def connect(self) -> None:
        """An API client for ``kubeconfig_path`` (no process-wide default is touched),
        its requests through ``api_flow``, its connection pool as large as the flow lets
        requests and streams be open at once."""
        from kubernetes import client
        from kubernetes import config as kconfig

        configuration = client.Configuration()
        self.api_flow.configure(configuration)
        try:
            self.api_client = kconfig.new_client_from_config(
                config_file=str(self.kubeconfig_path), client_configuration=configuration)
        except Exception as exc:  # the client raises ConfigException, OSError, yaml errors
            raise UserError(f"cannot load kubeconfig {self.kubeconfig_path}: {exc}") from None
        self.api_flow.attach(self.api_client)

    @property
    def core(self):
        from kubernetes import client

        return client.CoreV1Api(self.api_client)

    @property
    def node_api(self):
        from kubernetes import client

        return client.NodeV1Api(self.api_client)

    def server_version(self) -> str | None:
        from kubernetes import client

        try:
            version = client.VersionApi(self.api_client)
            return version.get_code(_request_timeout=TIMEOUTS.api_call).git_version
        except Exception:
            return None

    def kubectl(self, *args: str, timeout: float = TIMEOUTS.api_call
                ) -> subprocess.CompletedProcess | None:
        """kubectl ``args`` against the backend's kubeconfig. Its requests are counted in
        ``api_flow`` from the lines its round tripper logs at level 6, which are then
        taken out of ``stderr``. ``--vmodule`` raises the level of that one source file:
        ``-v=6`` would also log discovery, feature gates and whole response bodies over
        several lines, which no filter could tell from kubectl's own messages."""
        exe = kubectl_binary()
        if exe is None or self.kubeconfig_path is None:
            return None
        try:
            proc = subprocess.run([exe, "--kubeconfig", str(self.kubeconfig_path),
                                   "--vmodule=round_trippers=6", *args],
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) \
                else (exc.stderr or "")
            self.api_flow.count_kubectl(kubectl_requests(stderr)[0])
            return subprocess.CompletedProcess([exe, *args], 1, "", str(exc))
        except OSError as exc:
            return subprocess.CompletedProcess([exe, *args], 1, "", str(exc))
        found, proc.stderr = kubectl_requests(proc.stderr)
        self.api_flow.count_kubectl(found)
        return proc
