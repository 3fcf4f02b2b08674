"""Pods of a runtime class on a Kubernetes cluster, through the API: what the local and the
kubeconfig backends share.

One namespace per backend run (``sandcheck-<run id>``, labelled with the run id), pods
made from a PodSpec with the probe image and ``imagePullPolicy: Never``, waits bounded by
monotonic deadlines, exec through the API's exec subresource, and a failure that carries
the pod's events, ``kubectl describe`` and the backend's component log tails. A pod's start
is timed through a watch opened before the create call (``podwatch``, ``starttimes``):
never from the pod's whole-second condition timestamps.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sandcheck.catalog import Runtime
from sandcheck.clusters.base import (
    RUN_LABEL,
    RUNTIME_LABEL,
    Capability,
    ExecResult,
    PhaseTimes,
    PodSpec,
    Refused,
    unique_name,
)
from sandcheck.clusters.fleet import node_fingerprint
from sandcheck.clusters.podwatch import PodWatch
from sandcheck.clusters.runtimeclass import MANAGED_LABEL, runtime_class
from sandcheck.clusters.starttimes import (
    WatchedStart,
    event_marks,
    is_running,
    watched_start,
)
from sandcheck.containerd.images import PROBE_IMAGE
from sandcheck.errors import ComponentError, UserError
from sandcheck.progress import Progress, quiet
from sandcheck.timeouts import TIMEOUTS, wait_until

# Sandbox failures that retrying cannot fix: the node has no such handler.
_HANDLER_MISSING = ("no runtime for", "RuntimeHandler", "runtime handler", "not supported")
# Container states that end a wait at once (the pod never gets to Running by itself).
_FATAL_WAITING = {"ErrImageNeverPull", "InvalidImageName", "CreateContainerConfigError",
                  "CreateContainerError", "RunContainerError", "CrashLoopBackOff",
                  "ImageInspectError"}


def kubectl_binary() -> str | None:
    """The kubectl `sandcheck provision --kubernetes` built, else PATH's."""
    from sandcheck.provision.kubernetes import KUBERNETES
    from sandcheck.provision.paths import path_dir

    for cand in (path_dir() / "kubectl", KUBERNETES.binaries()["kubectl"]):
        if cand.is_file():
            return str(cand)
    return shutil.which("kubectl")


def namespace_for(run_id: str) -> str:
    return f"sandcheck-{run_id}".lower()[:63].rstrip("-")


def pod_manifest(spec: PodSpec, name: str, namespace: str, run_id: str,
                 image: str = PROBE_IMAGE, pull_policy: str = "Never") -> dict[str, Any]:
    """The Pod object for ``spec`` (pure: no API calls)."""
    sc: dict[str, Any] = {
        "seccompProfile": {"type": "Unconfined" if spec.seccomp == "Unconfined"
                           else "RuntimeDefault"},
    }
    if spec.privileged:
        sc["privileged"] = True
    if spec.add_capabilities or spec.drop_capabilities:
        sc["capabilities"] = {}
        if spec.add_capabilities:
            sc["capabilities"]["add"] = list(spec.add_capabilities)
        if spec.drop_capabilities:
            sc["capabilities"]["drop"] = list(spec.drop_capabilities)
    if spec.run_as_user is not None:
        sc["runAsUser"] = spec.run_as_user
    if spec.allow_privilege_escalation is not None:
        sc["allowPrivilegeEscalation"] = spec.allow_privilege_escalation
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {RUN_LABEL: run_id, RUNTIME_LABEL: spec.runtime.name, **spec.labels},
        },
        "spec": {
            "runtimeClassName": spec.runtime_class_name or spec.runtime.runtime_class,
            "restartPolicy": "Never",
            # Nothing in the pod talks to the API or to cluster DNS: no token volume
            # (a tmpfs mount per pod), no service environment, the node's resolv.conf.
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "dnsPolicy": "Default",
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "probe",
                "image": image,
                "imagePullPolicy": pull_policy,
                "command": list(spec.command),
                "securityContext": sc,
                **({"resources": spec.resources} if spec.resources else {}),
            }],
            **({"nodeName": spec.node_name} if spec.node_name else {}),
            **({"nodeSelector": dict(spec.node_selector)} if spec.node_selector else {}),
        },
    }


class KubePod:
    """A pod with one probe container, reached through the API."""

    def __init__(self, cluster: KubeCluster, spec: PodSpec, name: str, namespace: str):
        self.cluster = cluster
        self.spec = spec
        self.name = name
        self.namespace = namespace
        self.timings: PhaseTimes = WatchedStart()
        self.uid: str | None = None
        self.node_name: str | None = None

    def exec(self, argv: list[str], timeout: float = TIMEOUTS.exec) -> ExecResult:
        return self.cluster.exec_in_pod(self, argv, timeout)

    def read(self) -> dict[str, Any]:
        return self.cluster.read_pod(self.name, self.namespace)

    def describe(self) -> str:
        return self.cluster.describe_pod(self.name, self.namespace)

    def inspect(self) -> dict[str, Any]:
        """containerd's own view (sandbox, container) where the backend can reach the node."""
        return self.cluster.inspect_pod(self)

    def events(self) -> str:
        return self.cluster.pod_events_text(self.name, self.namespace)

    def diagnostics(self) -> str:
        return self.cluster.pod_diagnostics(self.name, self.namespace,
                                            runtime=self.spec.runtime.name)


class KubeCluster:
    """API-side pod handling shared by the Kubernetes backends.

    Subclasses set ``kubeconfig_path`` before calling ``connect()`` and may override
    ``component_logs()`` (name -> log tail) for the evidence of failures.
    """

    name = "kubernetes"
    level = "Kubernetes"
    capabilities = frozenset({Capability.KUBERNETES_API})
    step_label = "cluster"
    """How bring-up progress lines name this backend."""

    def __init__(self, runtimes: list[Runtime], run_id: str, image_ref: str = PROBE_IMAGE,
                 progress: Progress = quiet):
        self.runtimes = list(runtimes)
        self.run_id = run_id
        self.image_ref = image_ref
        self.pull_policy = "Never"
        """Never while the backend loads the probe itself; IfNotPresent with --image."""
        self.progress = progress
        self.missing_runtimes: dict[str, str] = {}
        """Selected runtimes left out before any pod (binaries a node lacks)."""
        self.namespace = namespace_for(run_id)
        self.kubeconfig_path: Path | None = None
        self.api_client = None
        self.verified: dict[str, Any] = {}
        """Handler -> how it was verified (a pod of its class ran)."""
        self.missing_handlers: dict[str, str] = {}
        """Handler -> why pods of its class cannot start on this cluster."""
        self.created_runtime_classes: list[str] = []
        self._namespace_ready = False
        self.timings: dict[str, float] = {}
        """Bring-up step -> monotonic seconds (``_step``), for the environment."""

    def _step(self, timing: str, step: Callable[[], object]) -> None:
        """Run one bring-up step, record its monotonic seconds and report them."""
        mark = time.monotonic()
        step()
        self.timings[timing] = time.monotonic() - mark
        self.progress(f"{self.step_label}: {timing.removesuffix('_seconds').replace('_', ' ')} "
                      f"in {self.timings[timing]:.1f}s")

    def nodes_fingerprint(self) -> list[dict[str, Any]] | str:
        """Every node's name and what its status says of it; the error text (evidence
        only) when the API cannot list them."""
        try:
            items = self.core.list_node(_request_timeout=TIMEOUTS.api_call).items
        except Exception as exc:
            return f"not readable: {exc}"
        return [{"name": n.metadata.name, **node_fingerprint(n)} for n in items]

    # -- API access -----------------------------------------------------------------------

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

    def component_logs(self) -> dict[str, str]:
        return {}

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

    # -- runtime classes -------------------------------------------------------------------

    def ensure_runtime_classes(self, use_existing: bool = False) -> list[str]:
        """Create the RuntimeClass of each selected runtime (notes on what was found)."""
        from kubernetes.client.rest import ApiException

        notes = []
        for rt in self.runtimes:
            body = runtime_class(rt)
            name = body["metadata"]["name"]
            try:
                found = self.node_api.read_runtime_class(name, _request_timeout=TIMEOUTS.api_call)
            except ApiException as exc:
                if exc.status != 404:
                    raise ComponentError(f"reading RuntimeClass {name}: {exc.status} "
                                         f"{exc.reason}") from None
                found = None
            if found is not None:
                managed = (found.metadata.labels or {}).get(MANAGED_LABEL) == "true"
                if found.handler != rt.handler and not use_existing:
                    raise UserError(
                        f"RuntimeClass {name} already exists with handler {found.handler!r}, "
                        f"the catalog's {rt.name} needs {rt.handler!r}: delete it, or pass "
                        "--use-existing-runtimeclasses to test the cluster's class as it is")
                notes.append(f"RuntimeClass {name} exists (handler {found.handler}"
                             f"{', made by sandcheck' if managed else ''})")
                continue
            if use_existing:
                raise UserError(f"RuntimeClass {name} (for {rt.name}) does not exist on the "
                                "cluster: create it, or run without "
                                "--use-existing-runtimeclasses so sandcheck creates it")
            try:
                self.node_api.create_runtime_class(body, _request_timeout=TIMEOUTS.api_call)
            except ApiException as exc:
                raise ComponentError(f"creating RuntimeClass {name}: {exc.status} "
                                     f"{exc.reason}: {exc.body}") from None
            self.created_runtime_classes.append(name)
            notes.append(f"RuntimeClass {name} created (handler {rt.handler})")
        return notes

    def delete_runtime_classes(self) -> None:
        for name in self.created_runtime_classes:
            try:
                self.node_api.delete_runtime_class(name, _request_timeout=TIMEOUTS.api_call)
            except Exception:
                pass
        self.created_runtime_classes = []

    # -- namespace ---------------------------------------------------------------------------

    def use_image(self, ref: str) -> None:
        """Pods name ``ref``, which nodes pull if they lack it; backends that load the
        probe themselves skip that when ``image_from_registry``."""
        self.image_ref = ref
        self.pull_policy = "IfNotPresent"

    @property
    def image_from_registry(self) -> bool:
        return self.pull_policy != "Never"

    def image_environment(self) -> dict[str, str]:
        """Which image the pods named and how nodes got it (evidence in every report)."""
        return {"probe_image": self.image_ref, "image_pull_policy": self.pull_policy}

    def ensure_namespace(self, timeout: float = TIMEOUTS.pod_start) -> str:
        """The run's namespace, with its default ServiceAccount (pods need it to exist)."""
        from kubernetes.client.rest import ApiException

        if self._namespace_ready:
            return self.namespace
        body = {"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": self.namespace, "labels": {RUN_LABEL: self.run_id}}}
        try:
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
        if self._gone(lambda: self.core.read_namespace(
                self.namespace, _request_timeout=TIMEOUTS.api_call), timeout):
            self._namespace_ready = False
            return True
        return False

    def _gone(self, read, timeout: float) -> bool:
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

    # -- pods ----------------------------------------------------------------------------------

    def create_pod(self, spec: PodSpec) -> KubePod:
        from kubernetes.client.rest import ApiException

        handler = spec.runtime.handler
        if handler in self.missing_handlers and spec.runtime_class_name is None:
            raise ComponentError(f"handler {handler!r} is not usable on this cluster: "
                                 f"{self.missing_handlers[handler]}")
        namespace = self.ensure_namespace()
        name = unique_name(spec.name_prefix)
        pod = KubePod(self, spec, name, namespace)
        body = pod_manifest(spec, name, namespace, self.run_id, self.image_ref,
                            self.pull_policy)
        with PodWatch(self.core, namespace, name, TIMEOUTS.pod_start) as watch:
            start, anchor = time.monotonic(), time.time_ns()
            try:
                created = self.core.create_namespaced_pod(namespace, body,
                                                          _request_timeout=TIMEOUTS.api_call)
            except ApiException as exc:
                raise ComponentError(f"the API refused pod {name} "
                                     f"(runtimeClassName {body['spec']['runtimeClassName']}): "
                                     f"{exc.status} {exc.reason}: {_api_message(exc)}") from None
            pod.uid = created.metadata.uid
            try:
                arrivals = self._wait_running(pod, watch, start, TIMEOUTS.pod_start)
            except BaseException:
                self.delete_pod(pod, wait=False)
                raise
        pod.timings = watched_start(arrivals, anchor)
        pod.timings.marks += event_marks(self._event_dicts(name, namespace), pod.timings)
        pod.timings.marks.sort(key=lambda m: m.seconds)
        pod.node_name = (arrivals[-1][1].get("spec") or {}).get("nodeName")
        return pod

    def _wait_running(self, pod: KubePod, watch: PodWatch, start: float, timeout: float
                      ) -> list[tuple[float, dict[str, Any]]]:
        """The watch's arrivals (seconds after ``start``, pod) up to the first that shows
        the containers running; a state that cannot lead there (the node lacks the
        handler, the image is absent) ends the wait at once, as does the deadline."""
        deadline = start + timeout
        next_events = start + TIMEOUTS.events_every
        arrivals: list[tuple[float, dict[str, Any]]] = []
        while True:
            now = time.monotonic()
            if now >= deadline:
                phase = ((arrivals[-1][1] if arrivals else {}).get("status") or {}).get("phase")
                raise ComponentError(
                    f"timed out after {timeout:.0f}s waiting for pod {pod.namespace}/{pod.name} "
                    f"({pod.spec.runtime.name}) to run: phase {phase}\n"
                    + self.pod_diagnostics(pod.name, pod.namespace, pod.spec.runtime.name))
            item = watch.next(min(TIMEOUTS.events_every, deadline - now))
            problem = None
            if item is not None and item[1] in ("ADDED", "MODIFIED"):
                arrivals.append((item[0] - start, item[2]))
                if is_running(item[2]):
                    return arrivals
                problem = _fatal_problem(item[2].get("status") or {})
            elif item is not None and item[1] == "DELETED":
                problem = "the pod was deleted before it ran"
            if problem is None and time.monotonic() >= next_events:
                next_events = time.monotonic() + TIMEOUTS.events_every
                problem = self._handler_problem(pod)
            if problem is not None:
                raise ComponentError(f"pod {pod.namespace}/{pod.name} "
                                     f"({pod.spec.runtime.name}) cannot start: {problem}\n"
                                     + self.pod_diagnostics(pod.name, pod.namespace,
                                                            pod.spec.runtime.name))

    def _handler_problem(self, pod: KubePod) -> str | None:
        """A FailedCreatePodSandBox event that says the node lacks the handler."""
        for ev in self._events(pod.name, pod.namespace):
            msg = ev.message or ""
            if ev.reason == "FailedCreatePodSandBox" and any(s in msg for s in _HANDLER_MISSING):
                return msg
        return None

    def inspect_pod(self, pod: KubePod) -> dict[str, Any]:
        return {}

    def node_kernel(self, pod: KubePod) -> str | None:
        """The kernel release the pod's node reports (for clusters that are not this host)."""
        node = pod.node_name or (pod.read().get("spec") or {}).get("nodeName")
        if not node:
            return None
        info = self.core.read_node(node, _request_timeout=TIMEOUTS.api_call).status.node_info
        return info.kernel_version

    def read_pod(self, name: str, namespace: str) -> dict[str, Any]:
        from kubernetes.client.rest import ApiException

        try:
            obj = self.core.read_namespaced_pod(name, namespace, _request_timeout=TIMEOUTS.api_call)
        except ApiException as exc:
            raise ComponentError(f"reading pod {namespace}/{name}: {exc.status} "
                                 f"{exc.reason}") from None
        return self.api_client.sanitize_for_serialization(obj)

    def delete_pod(self, pod: KubePod, wait: bool = True) -> None:
        from kubernetes.client.rest import ApiException

        if self.api_client is None:
            return
        # A graceful delete (the pod's own 1 s grace): the object goes only once kubelet
        # has stopped its containers and sandbox; grace 0 would drop the object at once
        # and leave the runtime's processes to die later.
        try:
            self.core.delete_namespaced_pod(pod.name, pod.namespace,
                                            _request_timeout=TIMEOUTS.api_call)
        except ApiException:
            return
        except Exception:
            return
        if not wait:
            return
        # The runtime's processes go with the pod: wait for the API object to be gone so
        # the next measurement does not see them.
        self._gone(lambda: self.core.read_namespaced_pod(
            pod.name, pod.namespace, _request_timeout=TIMEOUTS.api_call), TIMEOUTS.pod_delete)

    def exec_in_pod(self, pod: KubePod, argv: list[str], timeout: float) -> ExecResult:
        from kubernetes import client
        from kubernetes.client.rest import ApiException
        from kubernetes.stream import stream
        from kubernetes.stream.ws_client import ERROR_CHANNEL

        start = time.monotonic()
        # stream() rewires the ApiClient it is given; a client of its own per exec keeps
        # the shared one (and concurrent execs of a burst) intact.
        exec_api = client.CoreV1Api(client.ApiClient(self.api_client.configuration))
        try:
            ws = stream(exec_api.connect_get_namespaced_pod_exec, pod.name, pod.namespace,
                        container="probe", command=list(argv), stdin=False, stdout=True,
                        stderr=True, tty=False, _preload_content=False,
                        _request_timeout=timeout)
        except ApiException as exc:
            raise ComponentError(f"exec in {pod.namespace}/{pod.name} refused: {exc.status} "
                                 f"{exc.reason}: {_api_message(exc)}") from None
        except Exception as exc:  # websocket handshake errors
            raise ComponentError(f"exec in {pod.namespace}/{pod.name} failed: {exc}") from None
        out: list[str] = []
        err: list[str] = []
        deadline = start + timeout
        timed_out = False
        try:
            while ws.is_open():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    timed_out = True
                    break
                ws.update(timeout=min(TIMEOUTS.exec_poll, remaining))
                if ws.peek_stdout():
                    out.append(ws.read_stdout())
                if ws.peek_stderr():
                    err.append(ws.read_stderr())
            out.append(ws.read_stdout() if ws.peek_stdout() else "")
            err.append(ws.read_stderr() if ws.peek_stderr() else "")
            status_text = ws.read_channel(ERROR_CHANNEL)
        finally:
            ws.close()
        seconds = time.monotonic() - start
        if timed_out:
            err.append(f"\nsandcheck: exec did not finish within {timeout:.0f}s")
            return ExecResult(argv=list(argv), exit_code=-1, stdout="".join(out),
                              stderr="".join(err), seconds=seconds)
        code = exit_code_from_status(status_text)
        if code is None:
            err.append(f"\nsandcheck: the command did not run: {status_message(status_text)}")
            code = -1
        return ExecResult(argv=list(argv), exit_code=code, stdout="".join(out),
                          stderr="".join(err), seconds=seconds)

    def host_pids(self, pod: KubePod) -> list[int]:
        return []

    # -- evidence ---------------------------------------------------------------------------

    def _event_dicts(self, name: str, namespace: str) -> list[dict[str, Any]]:
        return [self.api_client.sanitize_for_serialization(ev)
                for ev in self._events(name, namespace)]

    def _events(self, name: str, namespace: str) -> list:
        try:
            return self.core.list_namespaced_event(
                namespace, field_selector=f"involvedObject.name={name}",
                _request_timeout=TIMEOUTS.api_call).items
        except Exception:
            return []

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

    # -- what the RuntimeClass suite asks (KubernetesBackend) -------------------------------

    def submit_pod(self, spec: PodSpec) -> tuple[str, str]:
        """Create a pod without waiting (for pods that must not run); the API's refusal
        comes back as ApiException. Deleted with the run's namespace at the latest."""
        from kubernetes.client.rest import ApiException

        namespace = self.ensure_namespace()
        name = unique_name(spec.name_prefix)
        try:
            self.core.create_namespaced_pod(namespace, pod_manifest(
                spec, name, namespace, self.run_id, self.image_ref, self.pull_policy),
                _request_timeout=TIMEOUTS.api_call)
        except ApiException as exc:
            raise Refused(exc.status, _api_message(exc), exc.body or "") from None
        return name, namespace

    def remove_pod(self, name: str, namespace: str) -> None:
        from kubernetes.client.rest import ApiException

        try:
            self.core.delete_namespaced_pod(name, namespace, grace_period_seconds=0,
                                            _request_timeout=TIMEOUTS.api_call)
        except ApiException as exc:
            if exc.status != 404:
                raise ComponentError(f"deleting pod {namespace}/{name}: {exc.status} "
                                     f"{exc.reason}") from None

    def pod_object(self, pod: KubePod) -> dict[str, Any]:
        return self.read_pod(pod.name, pod.namespace)

    def describe(self, pod: KubePod) -> str:
        return self.describe_pod(pod.name, pod.namespace)

    def events(self, name: str, namespace: str, reason: str | None = None) -> list[str]:
        return [ev.message or "" for ev in self._events(name, namespace)
                if reason is None or ev.reason == reason]

    def create_runtime_class(self, handler: str, **extra: Any) -> str:
        """A RuntimeClass with a fresh name, labelled as sandcheck's; stop() deletes it."""
        name = unique_name("sandcheck-rc")
        body = {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
                "metadata": {"name": name, "labels": {MANAGED_LABEL: "true",
                                                      RUN_LABEL: self.run_id}},
                "handler": handler, **extra}
        self.node_api.create_runtime_class(body, _request_timeout=TIMEOUTS.api_call)
        self.created_runtime_classes.append(name)
        return name

    def read_runtime_class(self, name: str) -> dict[str, Any]:
        obj = self.node_api.read_runtime_class(name, _request_timeout=TIMEOUTS.api_call)
        return self.api_client.sanitize_for_serialization(obj)

    def delete_runtime_class(self, name: str) -> None:
        from kubernetes.client.rest import ApiException

        try:
            self.node_api.delete_runtime_class(name, _request_timeout=TIMEOUTS.api_call)
        except ApiException as exc:
            if exc.status != 404:
                raise ComponentError(f"deleting RuntimeClass {name}: {exc.status} "
                                     f"{exc.reason}") from None
        if name in self.created_runtime_classes:
            self.created_runtime_classes.remove(name)

    def node_names(self) -> list[str]:
        return [n.metadata.name for n in
                self.core.list_node(_request_timeout=TIMEOUTS.api_call).items]

    def nodes_lacking(self, handler: str) -> list[str]:
        """Unknown on a cluster whose nodes this backend did not set up."""
        return []

    def handler_check(self, timeout: float = TIMEOUTS.pod_start) -> dict[str, str]:
        """Start one pod per selected runtime class; handler -> problem for those that fail."""
        problems: dict[str, str] = {}
        for rt in self.runtimes:
            spec = PodSpec(runtime=rt, name_prefix=f"check-{rt.name}"[:40])
            try:
                pod = self.create_pod(spec)
            except ComponentError as exc:
                problems[rt.handler] = str(exc).split("\n", 1)[0]
                self.missing_handlers[rt.handler] = problems[rt.handler]
                continue
            self.verified[rt.handler] = f"pod {pod.name} of RuntimeClass " \
                                        f"{rt.runtime_class} ran on {pod.node_name}"
            self.delete_pod(pod)
        return problems


def exit_code_from_status(text: Any) -> int | None:
    """The exit code in the exec error channel's Status (pure).

    Success is ``{"status": "Success"}``; a non-zero exit is a Failure whose
    details.causes carry ``ExitCode``; anything else (a failure to start the command)
    has no exit code."""
    import json

    if not text:
        return None
    try:
        status = json.loads(text) if isinstance(text, str) else text
    except ValueError:
        return None
    if status.get("status") == "Success":
        return 0
    for cause in (status.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            try:
                return int(cause.get("message"))
            except (TypeError, ValueError):
                return None
    return None


def status_message(text: Any) -> str:
    """The message of an exec error channel's Status, else the text itself (pure)."""
    import json

    try:
        return json.loads(text).get("message") or str(text)
    except (TypeError, ValueError, AttributeError):
        return str(text)


def _fatal_problem(status: dict[str, Any]) -> str | None:
    phase = status.get("phase")
    if phase in ("Failed", "Succeeded"):
        return f"pod phase {phase} ({status.get('reason') or ''} {status.get('message') or ''})"
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        waiting = state.get("waiting") or {}
        if waiting.get("reason") in _FATAL_WAITING:
            hint = ""
            if waiting.get("reason") == "ErrImageNeverPull":
                hint = (f" (the probe image {PROBE_IMAGE} is not on the node: import the "
                        "archive sandcheck/fixtures/image.py builds with "
                        "`ctr -n k8s.io images import`)")
            return f"container {cs.get('name')}: {waiting.get('reason')}: " \
                   f"{waiting.get('message') or ''}{hint}"
        term = state.get("terminated")
        if term:
            return f"container {cs.get('name')} exited {term.get('exitCode')} " \
                   f"({term.get('reason')}): {term.get('message') or ''}"
    return None


def _api_message(exc) -> str:
    import json

    try:
        return json.loads(exc.body).get("message") or exc.body
    except (TypeError, ValueError, AttributeError):
        return str(exc.body)
