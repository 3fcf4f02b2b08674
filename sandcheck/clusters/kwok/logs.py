"""Recorded logs for the simulated pods: a pod of runtime R on a simulated node answers a
log request for its container C with the text recorded for (R, C) on the real node.

kwok answers ``GET .../pods/P/log?container=C`` for a pod of a node it manages from a
file named by a ``Logs`` object of the pod's namespace and name (kwok's ``ClusterLogs``
choose pods by namespace and name too, never by label, so they cannot serve a runc pod and
a runsc pod of one namespace differently). The backend therefore watches the pods the
suites make (they carry ``RUNTIME_LABEL``): for each that lands on a simulated node it
makes a ``Logs`` object naming, per container, the file of that runtime and container,
then marks the pod with ``SERVED_ANNOTATION``, which kwok's pod stage waits for (see
``config``): the pod turns Running only once kwok can answer for its logs. The object is
owned by the pod, so it goes with it.

A recording is written once per (runtime, container) in the CRI log format kwok reads
(the one kubelet's ``/var/log/pods`` files have): line by line, a timestamp, the stream and
F for a whole line or P for a last line without newline, so the text comes back
byte for byte. The files may come before or after the pods: a request reads the file when
it comes, and one with no recording yet answers kwok's error.

kwok's log server keeps the Logs objects in a list it rebuilds only when its informer's
resource version changes, and that version can move on before the informer's store holds
the object (the reflector is ahead of the store): the list then lacks the new object, and
the pod's log request answers 400 "no logs found", until some later change of a Logs
object. After the last pods of a run no such change would come, so the watcher makes one:
a nudge object of its own, changed once a second while pods were served since the last
nudge.
"""

from __future__ import annotations

import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sandcheck import timeouts
from sandcheck.clusters.base import RUNTIME_LABEL
from sandcheck.clusters.kwok.config import LOGS_KIND, SERVED_ANNOTATION
from sandcheck.clusters.podwatch import END, PodWatch
from sandcheck.errors import ComponentError, UserError
from sandcheck.timeouts import TIMEOUTS

GROUP = "kwok.x-k8s.io"
VERSION = "v1alpha1"
PLURAL = "logs"
SERVE_WORKERS = 4
"""Pods made ready for kwok at once (two requests each)."""
SERVE_ATTEMPTS = 5
"""Tries per pod before the pod is reported as not served (it then stays Pending)."""
_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
NUDGE = "sandcheck-logs-nudge"
"""The Logs object (in ``default``, naming no pod) whose changes refresh kwok's list."""
NUDGE_EVERY = 1.0


def logs_crd() -> dict[str, Any]:
    """The CustomResourceDefinition of kwok's Logs (group, version, kind and plural as
    kwok's client asks for them; the schema keeps whatever kwok writes)."""
    open_object = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {"kind": LOGS_KIND, "listKind": f"{LOGS_KIND}List", "plural": PLURAL,
                      "singular": PLURAL},
            "scope": "Namespaced",
            "versions": [{"name": VERSION, "served": True, "storage": True,
                          "subresources": {"status": {}},
                          "schema": {"openAPIV3Schema": {
                              "type": "object",
                              "properties": {"spec": open_object, "status": open_object}}}}],
        },
    }


def cri_log(text: str, when: str, stream: str = "stdout") -> str:
    """``text`` as a CRI log file (pure): a whole line per F record, a last line without
    newline as a P record, so a reader hands back exactly ``text``."""
    lines = text.split("\n")
    records = [f"{when} {stream} F {line}\n" for line in lines[:-1]]
    if lines[-1]:
        records.append(f"{when} {stream} P {lines[-1]}\n")
    return "".join(records)


def recording_path(root: Path, runtime: str, container: str) -> Path:
    return root / runtime / f"{container}.log"


def logs_object(pod: dict[str, Any], root: Path) -> dict[str, Any]:
    """The Logs object of a suite's pod (pure): each container's recording of the pod's
    runtime, owned by the pod."""
    meta, spec = pod["metadata"], pod.get("spec") or {}
    runtime = (meta.get("labels") or {})[RUNTIME_LABEL]
    containers = [c["name"] for c in [*(spec.get("initContainers") or []),
                                      *(spec.get("containers") or [])]]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": LOGS_KIND,
        "metadata": {"name": meta["name"], "namespace": meta["namespace"],
                     "ownerReferences": [{"apiVersion": "v1", "kind": "Pod",
                                          "name": meta["name"], "uid": meta["uid"]}]},
        "spec": {"logs": [{"containers": [c],
                           "logsFile": str(recording_path(root, runtime, c))}
                          for c in containers]},
    }


def write_recordings(root: Path, recordings: dict[str, dict[str, str]]) -> list[Path]:
    """Each recording into its file, replaced atomically (a request under way reads the
    old text or the new, never half of one); UserError for a name that is no DNS name."""
    when = time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime())
    written = []
    for runtime, containers in recordings.items():
        for container, text in containers.items():
            for what, name in (("runtime", runtime), ("container", container)):
                if not _NAME.fullmatch(name):
                    raise UserError(f"serve_logs: {what} name {name!r} is no DNS name")
            path = recording_path(root, runtime, container)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(cri_log(text, when))
            os.replace(tmp, path)
            written.append(path)
    return written


class PodLogs:
    """The watch that gives each suite pod on a simulated node its Logs object and mark.

    ``nodes``: the simulated nodes' names. Every wait of the run watches this like a
    daemon: a reader that stopped would leave every later pod Pending."""

    name = "kwok pod logs"

    def __init__(self, api_client, nodes: set[str], root: Path):
        from kubernetes import client

        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.nodes = nodes
        self.root = root
        self.problems: list[str] = []
        """Pods that could not be served, and watch trouble: for a failure's diagnostics."""
        self.served = 0
        self._nudged = (0, 0.0)
        """(served, monotonic time) at the last nudge."""
        self._taken: set[str] = set()
        self._closed = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=SERVE_WORKERS,
                                        thread_name_prefix="kwok-logs")
        self._watch = PodWatch(self.core, "", None, TIMEOUTS.simulated_watch,
                               labels=RUNTIME_LABEL, lister=self._list)
        self._thread: threading.Thread | None = None

    def _list(self, _namespace: str, **kwargs: Any):
        return self.core.list_pod_for_all_namespaces(**kwargs)

    def start(self) -> None:
        """Watch from now on (the simulated nodes have no pod yet)."""
        self._make({"apiVersion": f"{GROUP}/{VERSION}", "kind": LOGS_KIND,
                    "metadata": {"name": NUDGE, "namespace": "default"}, "spec": {"logs": []}})
        self._watch.__enter__()
        self._thread = threading.Thread(target=self._pump, daemon=True, name="kwok-logs")
        self._thread.start()
        timeouts.watch(self, self.exit_error)

    def exit_error(self) -> ComponentError | None:
        if self._thread is None or self._thread.is_alive() or self._closed.is_set():
            return None
        return ComponentError(f"{self.name}: the pod watch stopped; "
                              f"{'; '.join(self.problems[-3:]) or 'no error recorded'}")

    def _pump(self) -> None:
        while not self._closed.is_set():
            try:
                item = self._watch.next(TIMEOUTS.slow_poll)
            except ComponentError as exc:  # reopening failed (the API is busy): again
                self.problems.append(str(exc))
                self._closed.wait(TIMEOUTS.slow_poll)
                self._watch.items.put((0.0, END, {}))
                continue
            if item is not None and item[1] in ("ADDED", "MODIFIED"):
                try:
                    self._take(item[2])
                except Exception as exc:  # one odd object must not end the watch
                    self.problems.append(f"pod event not handled: {exc!r}")
            self._nudge_if_due()

    def _nudge_if_due(self) -> None:
        """Pods were served since the last nudge, at least NUDGE_EVERY ago: nudge again."""
        served, when = self._nudged
        if self.served != served and time.monotonic() - when >= NUDGE_EVERY:
            self._nudged = (self.served, time.monotonic())
            self._pool.submit(self._nudge, self.served)

    def _nudge(self, served: int) -> None:
        try:
            self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, "default", PLURAL, NUDGE,
                {"metadata": {"annotations": {"sandcheck.dev/served": str(served)}}},
                _request_timeout=TIMEOUTS.api_call)
        except Exception as exc:  # the next pod served nudges again
            self.problems.append(f"nudging kwok's list of Logs: {exc}")

    def _take(self, pod: dict[str, Any]) -> None:
        meta = pod.get("metadata") or {}
        if ((pod.get("spec") or {}).get("nodeName") not in self.nodes
                or SERVED_ANNOTATION in (meta.get("annotations") or {})
                or meta.get("deletionTimestamp") or meta.get("uid") in self._taken):
            return
        self._taken.add(meta["uid"])
        self._pool.submit(self._serve, pod)

    def _serve(self, pod: dict[str, Any]) -> None:
        from kubernetes.client.rest import ApiException

        meta = pod["metadata"]
        where = f"{meta['namespace']}/{meta['name']}"
        error = ""
        for _ in range(SERVE_ATTEMPTS):
            try:
                self._create(pod)
                self.core.patch_namespaced_pod(
                    meta["name"], meta["namespace"],
                    {"metadata": {"annotations": {SERVED_ANNOTATION: "served"}}},
                    _request_timeout=TIMEOUTS.api_call)
                self.served += 1
                return
            except ApiException as exc:
                if exc.status == 404:  # the pod went first
                    return
                error = f"{exc.status} {exc.reason}"
            except Exception as exc:  # the API is busy or restarting: try again
                error = str(exc)
            if self._closed.wait(TIMEOUTS.slow_poll):
                return
        self.problems.append(f"pod {where}: not served: {error}")

    def _create(self, pod: dict[str, Any]) -> None:
        self._make(logs_object(pod, self.root))

    def _make(self, body: dict[str, Any]) -> None:
        from kubernetes.client.rest import ApiException

        try:
            self.custom.create_namespaced_custom_object(
                GROUP, VERSION, body["metadata"]["namespace"], PLURAL, body,
                _request_timeout=TIMEOUTS.api_call)
        except ApiException as exc:
            if exc.status != 409:  # made by an earlier try
                raise

    def close(self) -> None:
        timeouts.unwatch(self)
        self._closed.set()
        self._watch.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._thread is not None:
            self._thread.join(TIMEOUTS.component_stop)
