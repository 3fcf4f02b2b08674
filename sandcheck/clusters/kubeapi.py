"""The Kubernetes API as the Kubernetes backends reach it: a client of the backend's own
kubeconfig, the typed APIs made from it, kubectl run against the same kubeconfig, the
message of an API refusal, and the wait for an object to be gone.

No process-wide default client is touched: each backend has its own, so two backends (or
a backend and the user's kubectl context) never share settings.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

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

    def connect(self) -> None:
        """An API client for ``kubeconfig_path`` (no process-wide default is touched)."""
        from kubernetes import config as kconfig

        try:
            self.api_client = kconfig.new_client_from_config(config_file=str(self.kubeconfig_path))
        except Exception as exc:  # the client raises ConfigException, OSError, yaml errors
            raise UserError(f"cannot load kubeconfig {self.kubeconfig_path}: {exc}") from None
        self.api_client.configuration.retries = 0

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
        exe = kubectl_binary()
        if exe is None or self.kubeconfig_path is None:
            return None
        try:
            return subprocess.run([exe, "--kubeconfig", str(self.kubeconfig_path), *args],
                                  capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return subprocess.CompletedProcess([exe, *args], 1, "", str(exc))
