"""The namespace of a backend run on a Kubernetes cluster: ``sandcheck-<run id>``,
labelled with the run id, made before the first pod and deleted (with every pod still in
it) at the end.

A new namespace takes pods only once kube-controller-manager has given it its default
ServiceAccount, so making it waits for that too.
"""

from __future__ import annotations

from sandcheck.clusters.apiflow import idempotent
from sandcheck.clusters.base import RUN_LABEL
from sandcheck.clusters.kubeapi import gone
from sandcheck.clusters.kubeevidence import KubeEvidence
from sandcheck.errors import ComponentError
from sandcheck.timeouts import TIMEOUTS, wait_until


def namespace_for(run_id: str) -> str:
    return f"sandcheck-{run_id}".lower()[:63].rstrip("-")


class KubeNamespace(KubeEvidence):
    """The run's namespace (``namespace``, from ``namespace_for(run_id)``)."""

    namespace: str
    run_id: str
    _namespace_ready: bool

    def ensure_namespace(self, timeout: float = TIMEOUTS.pod_start) -> str:
        """The run's namespace, with its default ServiceAccount (pods need it to exist)."""
        from kubernetes.client.rest import ApiException

        if self._namespace_ready:
            return self.namespace
        body = {"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": self.namespace, "labels": {RUN_LABEL: self.run_id}}}
        try:
            with idempotent():  # repeated after a 5xx: a 409 below means it exists
                self.core.create_namespace(body, _request_timeout=TIMEOUTS.api_call)
        except ApiException as exc:
            if exc.status != 409:
                raise ComponentError(f"creating namespace {self.namespace}: {exc.status} "
                                     f"{exc.reason}: {exc.body}") from None

        def service_account() -> bool | None:
            try:
                self.core.read_namespaced_service_account(
                    "default", self.namespace, _request_timeout=TIMEOUTS.api_call)
                return True
            except ApiException as exc:
                if exc.status != 404:
                    raise ComponentError(f"reading the default ServiceAccount of "
                                         f"{self.namespace}: {exc.status} {exc.reason}") from None
            return None

        wait_until(service_account, timeout, f"namespace {self.namespace} to get its default "
                   "ServiceAccount (is kube-controller-manager running?)",
                   interval=TIMEOUTS.ready_poll,
                   state=self._logs_text)
        self._namespace_ready = True
        return self.namespace

    def delete_namespace(self, timeout: float = TIMEOUTS.pod_delete) -> bool:
        """Delete the run's namespace and wait (bounded) until it is gone."""
        from kubernetes.client.rest import ApiException

        if self.api_client is None:
            return True
        try:
            self.core.delete_namespace(self.namespace, grace_period_seconds=0,
                                       _request_timeout=TIMEOUTS.api_call)
        except ApiException as exc:
            if exc.status == 404:
                return True
            return False
        except Exception:
            return False
        if gone(lambda: self.core.read_namespace(
                self.namespace, _request_timeout=TIMEOUTS.api_call), timeout):
            self._namespace_ready = False
            return True
        return False
