"""What a failed pod on a Kubernetes backend is reported with: its events, ``kubectl
describe pod`` and the tails of the backend's component logs.

A pod that does not start says why only in these places (the sandbox's handler error is
an event, kubelet's reasons are in its log), so every failure carries all of them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sandcheck.clusters.kubeapi import KubeApi
from sandcheck.timeouts import TIMEOUTS


class KubeEvidence(KubeApi):
    """Events and diagnostics of pods; backends override ``component_logs()`` (name -> log
    tail) with the logs of the components they run."""

    def component_logs(self) -> dict[str, str]:
        return {}

    def _events(self, name: str, namespace: str) -> list:
        try:
            return self.core.list_namespaced_event(
                namespace, field_selector=f"involvedObject.name={name}",
                _request_timeout=TIMEOUTS.api_call).items
        except Exception:
            return []

    def _event_dicts(self, name: str, namespace: str) -> list[dict[str, Any]]:
        return [self.api_client.sanitize_for_serialization(ev)
                for ev in self._events(name, namespace)]

    def events(self, name: str, namespace: str, reason: str | None = None) -> list[str]:
        return [ev.message or "" for ev in self._events(name, namespace)
                if reason is None or ev.reason == reason]

    def pod_events_text(self, name: str, namespace: str) -> str:
        lines = []
        epoch = dt.datetime.min.replace(tzinfo=dt.timezone.utc)

        def when(ev) -> dt.datetime:
            return ev.last_timestamp or ev.event_time or ev.first_timestamp or epoch

        for ev in sorted(self._events(name, namespace), key=when):
            source = (ev.source.component if ev.source else None) or ev.reporting_component
            lines.append(f"{when(ev)} {ev.type} {ev.reason} ({source} x{ev.count or 1}): "
                         f"{ev.message}")
        return "\n".join(lines) or "(no events)"

    def describe_pod(self, name: str, namespace: str) -> str:
        proc = self.kubectl("describe", "pod", "-n", namespace, name)
        if proc is None:
            return "(kubectl not found: run `sandcheck provision --kubernetes`)"
        return (proc.stdout or "") + (proc.stderr or "")

    def _logs_text(self) -> str:
        return "".join(f"\n--- {name} log tail:\n{tail}"
                       for name, tail in self.component_logs().items())

    def pod_diagnostics(self, name: str, namespace: str, runtime: str = "") -> str:
        return (f"pod {namespace}/{name} runtime={runtime}\n"
                f"--- events:\n{self.pod_events_text(name, namespace)}\n"
                f"--- kubectl describe pod:\n{self.describe_pod(name, namespace)}"
                + self._logs_text())
