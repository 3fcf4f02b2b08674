"""The kubeconfig backend: an existing cluster, reached through its kubeconfig.

Nodes are never touched. What the run creates: one namespace (``sandcheck-<run id>``,
labelled with the run id) and, unless ``--use-existing-runtimeclasses``, the RuntimeClasses
of the selected runtimes that do not exist yet (labelled ``sandcheck.dev/managed``);
stop() deletes exactly those.

Before any suite runs, one pod per RuntimeClass checks that its handler exists on the
nodes; the classes whose pods cannot start are reported by name with the reason, and
every later pod of such a class fails at once with that reason.

The probe image: push it to a registry the nodes can pull from, ``sandcheck push-image
registry.example.com/team/probe``, and run with the ``--image REF`` it prints (pods pull it
with ``imagePullPolicy: IfNotPresent``). Without ``--image`` pods use
``localhost/sandcheck/probe:latest`` with ``imagePullPolicy: Never``: import the archive
(cached under ~/.cache/sandcheck/probe by any run) on each node into containerd's CRI
namespace first::

    ctr -n k8s.io images import --all-platforms probe-image.tar
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sandcheck.catalog import Runtime
from sandcheck.clusters.base import BackendSettings
from sandcheck.clusters.kube import KubeCluster
from sandcheck.errors import UserError
from sandcheck.progress import Progress, quiet
from sandcheck.timeouts import TIMEOUTS


class ExistingCluster(KubeCluster):
    name = "kubeconfig"

    def __init__(self, runtimes: list[Runtime], run_id: str, kubeconfig: str | Path,
                 use_existing: bool = False, keep: bool = False, progress: Progress = quiet):
        super().__init__(runtimes, run_id, progress=progress)
        self.kubeconfig_path = Path(kubeconfig).expanduser()
        self.use_existing = use_existing
        self.keep = keep
        self.notes: list[str] = []

    def start(self) -> None:
        """Attach; on a failure or interrupt, remove what this run created so far."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        if not self.kubeconfig_path.is_file():
            raise UserError(f"--kubeconfig {self.kubeconfig_path}: no such file")
        self.connect()
        self._check_reachable()
        self.notes = self.ensure_runtime_classes(use_existing=self.use_existing)
        self.ensure_namespace()
        problems = self.handler_check(timeout=TIMEOUTS.pod_start)
        for handler, why in problems.items():
            classes = [rt.runtime_class for rt in self.runtimes if rt.handler == handler]
            self.progress(f"RuntimeClass {', '.join(classes)} (handler {handler!r}) cannot "
                          f"run pods on this cluster: {why}")

    def _check_reachable(self) -> None:
        from kubernetes import client

        try:
            client.VersionApi(self.api_client).get_code(_request_timeout=TIMEOUTS.api_call)
        except Exception as exc:  # urllib3 connection errors, TLS errors, 401/403
            server = self.api_client.configuration.host
            reason = getattr(exc, "reason", None) or exc
            raise UserError(f"the cluster in {self.kubeconfig_path} is unreachable at "
                            f"{server}: {reason}") from None

    def environment(self) -> dict[str, Any]:
        env: dict[str, Any] = {
            "backend": self.name,
            "kubernetes": self.server_version(),
            "server": self.api_client.configuration.host if self.api_client else None,
            **self.image_environment(),
            "runtime_classes": self.notes,
            "handlers_verified": dict(self.verified),
            "handlers_missing": dict(self.missing_handlers),
        }
        env["nodes"] = self.nodes_fingerprint()
        return env

    def stop(self) -> None:
        if self.keep or self.api_client is None:
            return
        self.delete_namespace(timeout=TIMEOUTS.pod_delete)
        self.delete_runtime_classes()
        try:
            self.api_client.close()
        except Exception:
            pass
        self.api_client = None


def open_backend(settings: BackendSettings) -> ExistingCluster:
    path = settings.options.get("kubeconfig")
    if path is None:
        raise UserError("--backend kubeconfig needs --kubeconfig PATH (the kubeconfig of the "
                        "cluster to test)")
    if not Path(path).expanduser().is_file():
        raise UserError(f"--kubeconfig {path}: no such file")
    return ExistingCluster(settings.runtimes, settings.run_id, path,
                           use_existing=bool(settings.options.get("use_existing_runtimeclasses")),
                           keep=settings.keep, progress=settings.progress)
