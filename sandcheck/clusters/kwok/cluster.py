"""The kwok backend: the local backend's real cluster (etcd, API server, controllers,
scheduler and one real kubelet node on a private containerd) plus ``--kwok-nodes N``
simulated nodes, kept by kwok's controller.

The real node stays: it is the recording node, where pods really run and whose logs a
suite records (``serve_logs``) to be replayed by the simulated pods. kwok runs as one more
component of the run (its own process in the run's cgroup, its log beside the others', its
death noticed by every wait), with a client identity and a serving certificate of the run's
CA; the simulated nodes are registered through the API (``nodes``) and made Ready by it.
A pod pinned to a simulated node (``nodeName``) runs at once: kwok marks its containers
started and ready without starting anything.

What the checks may ask of this backend is what holds on every node they see: a Kubernetes
API. A simulated pod has no host process, no cgroup, no sandbox and no kernel, so
``inspect_pod``, ``host_pids``, ``sandbox_handler`` and ``node_kernel`` answer nothing for
one, and the checks that need them skip saying why.
"""

from __future__ import annotations

import json
import os
import ssl
import time
from typing import Any

from sandcheck.catalog import Runtime
from sandcheck.clusters.base import RUNTIME_LABEL, BackendSettings, Capability
from sandcheck.clusters.kube import KubeCluster, KubePod
from sandcheck.clusters.kwok.binary import kwok_binary
from sandcheck.clusters.kwok.config import SERVED_ANNOTATION, SIMULATED_SELECTOR, config_text
from sandcheck.clusters.kwok.logs import (
    GROUP,
    PLURAL,
    VERSION,
    PodLogs,
    logs_crd,
    logs_object,
    write_recordings,
)
from sandcheck.clusters.kwok.nodes import (
    MAX_NODES,
    node_manifest,
    node_names,
    register,
    wait_ready,
)
from sandcheck.clusters.local.cluster import STOP_ORDER, LocalCluster
from sandcheck.clusters.local.components import free_port
from sandcheck.clusters.local.kubelet import LOOPBACK, NODE_NAME
from sandcheck.clusters.local.pki import CertRequest, Pki, write_kubeconfig
from sandcheck.containerd.images import ProbeImage
from sandcheck.errors import UserError
from sandcheck.host.workdir import WORK_BASE
from sandcheck.progress import Progress, quiet
from sandcheck.provision.pins import KWOK_VERSION
from sandcheck.timeouts import TIMEOUTS, wait_until

DEFAULT_NODES = 10


class KwokCluster(LocalCluster):
    name = "kwok"
    step_label = "kwok cluster"
    capabilities = frozenset({Capability.KUBERNETES_API, Capability.SIMULATED_NODES,
                              Capability.CONTROL_PLANE_PROCESSES})
    default_node_selector = SIMULATED_SELECTOR
    """The nodes a certification checks unless told otherwise: the simulated ones."""
    recording_node = NODE_NAME
    """The real node whose cells' logs the simulated pods replay (sandcheck/clusters/fleet.py)."""
    stop_order = ("kwok", *STOP_ORDER)
    """kwok goes first, after the namespace (its pods are deleted by kwok's stage)."""

    def __init__(self, runtimes: list[Runtime], run_id: str, image: ProbeImage | None,
                 nodes: int = DEFAULT_NODES, containerd: str | None = None,
                 keep: bool = False, progress: Progress = quiet):
        """Nothing is made or started here; bad options raise UserError."""
        if not 1 <= nodes <= MAX_NODES:
            raise UserError(f"--kwok-nodes {nodes}: give 1 to {MAX_NODES} simulated nodes")
        super().__init__(runtimes, run_id, image, containerd=containerd, keep=keep,
                         progress=progress)
        self.workdir = WORK_BASE / f"kwok-{run_id}"
        self.pki = Pki(self.workdir / "pki")
        self.kubeconfig_path = self.workdir / "admin.kubeconfig"
        self.simulated = node_names(nodes)
        self._simulated = set(self.simulated)
        self.recordings_dir = self.workdir / "recordings"
        self.pod_logs: PodLogs | None = None

    # -- bring-up -----------------------------------------------------------------------

    def _start(self) -> None:
        t0 = time.monotonic()
        kwok = kwok_binary()  # before anything starts: a missing kwok names the fix at once
        super()._start()
        self.bins["kwok"] = kwok
        self.ports["kwok"] = free_port(LOOPBACK)
        self._step("kwok_seconds", self._start_kwok)
        self._step("simulated_nodes_created_seconds", self._create_nodes)
        self._step("simulated_nodes_ready_seconds", self._wait_nodes)
        self.timings["total_seconds"] = time.monotonic() - t0

    def _make_pki(self) -> None:
        super()._make_pki()
        # The API server reaches kwok's server at 127.0.0.1 (the simulated nodes' Hostname
        # address) and checks it against the run's CA.
        self.pki.issue(CertRequest("kwok-serving", "kwok", server=True, dns=("localhost",),
                                   ips=(LOOPBACK,)))
        # kwok writes nodes, leases, pod status and deletions, and reads its Logs objects:
        # an identity of its own (audit and request counts name it), with the rights of
        # the cluster's admin.
        req = CertRequest("kwok-controller", "system:kwok-controller",
                          organizations=("system:masters",), client=True)
        self.pki.issue(req)
        write_kubeconfig(self.workdir / "kwok.kubeconfig", self.server, self.pki, req)

    def _start_kwok(self) -> None:
        self._install_logs_crd()
        config = self.workdir / "kwok.yaml"
        config.write_text(config_text(
            server_address=f"{LOOPBACK}:{self.ports['kwok']}",
            cert=self.pki.path("kwok-serving", "crt"), key=self.pki.path("kwok-serving", "key")))
        self.recordings_dir.mkdir(parents=True, exist_ok=True)
        # KWOK_WORKDIR: kwok would otherwise read ~/.kwok/kwok.yaml first, if there is one.
        comp = self._component("kwok", [
            self.bins["kwok"], f"--config={config}",
            f"--kubeconfig={self.workdir / 'kwok.kubeconfig'}",
        ], env={**os.environ, "KWOK_WORKDIR": str(self.workdir / "kwok-home")})
        ctx = ssl.create_default_context(cafile=str(self.pki.path("ca", "crt")))
        comp.wait_http(f"https://{LOOPBACK}:{self.ports['kwok']}/healthz", TIMEOUTS.daemon_start,
                       ssl_context=ctx, ok=lambda body: body.strip() == "ok")
        # A client of its own: what the simulator does per pod (a Logs object, an
        # annotation) is kwok's share of the work, not the certifying run's, so it is
        # neither paced by nor counted in the run's API limits (api_requests).
        from kubernetes import config as kconfig

        self.simulator_client = kconfig.new_client_from_config(
            config_file=str(self.kubeconfig_path))
        self.pod_logs = PodLogs(self.simulator_client, self._simulated, self.recordings_dir)
        self.pod_logs.start()

    def _install_logs_crd(self) -> None:
        from kubernetes import client

        api = client.ApiextensionsV1Api(self.api_client)
        body = logs_crd()
        api.create_custom_resource_definition(body, _request_timeout=TIMEOUTS.api_call)

        def established() -> bool | None:
            crd = api.read_custom_resource_definition(body["metadata"]["name"],
                                                      _request_timeout=TIMEOUTS.api_call)
            return True if any(c.type == "Established" and c.status == "True"
                               for c in crd.status.conditions or []) else None

        wait_until(established, TIMEOUTS.api_call, f"CRD {body['metadata']['name']}",
                   interval=TIMEOUTS.ready_poll)
        # The API server prepares a new resource's writes on the first one (two seconds
        # here): a dry run pays that now instead of the first simulated pod.
        custom = client.CustomObjectsApi(self.api_client)
        probe = logs_object({"metadata": {"name": "warm-up", "namespace": self.namespace,
                                          "uid": "00000000-0000-0000-0000-000000000000",
                                          "labels": {RUNTIME_LABEL: "warm-up"}},
                             "spec": {"containers": [{"name": "probe"}]}}, self.recordings_dir)
        custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, probe,
                                               dry_run="All", _request_timeout=TIMEOUTS.api_call)

    def _create_nodes(self) -> None:
        response = self.core.read_node(NODE_NAME, _preload_content=False,
                                       _request_timeout=TIMEOUTS.api_call)
        template = json.loads(response.data).get("status") or {}
        register(self.core, [node_manifest(name, i, run_id=self.run_id, port=self.ports["kwok"],
                                           runtimes=self.runtimes, template=template)
                             for i, name in enumerate(self.simulated)])

    def _wait_nodes(self) -> None:
        kwok = self.components["kwok"]
        wait_ready(self.core, self.simulated, TIMEOUTS.node_ready,
                   state=lambda: f"kwok log {kwok.log_path}, tail:\n{kwok.log_tail()}")

    # -- recorded logs ------------------------------------------------------------------

    def serve_logs(self, recordings: dict[str, dict[str, str]]) -> None:
        """From now on a log request for container C of a simulated pod labelled with
        runtime R answers ``recordings[R][C]`` exactly (runtime: the catalog's name)."""
        write_recordings(self.recordings_dir, recordings)

    # -- what a simulated pod cannot show -------------------------------------------------

    def is_simulated(self, pod: KubePod) -> bool:
        node = pod.node_name or (pod.read().get("spec") or {}).get("nodeName")
        return node in self._simulated

    def inspect_pod(self, pod: KubePod) -> dict[str, Any]:
        """Nothing for a simulated pod: no containerd made it."""
        return {} if self.is_simulated(pod) else super().inspect_pod(pod)

    def sandbox_handler(self, pod: KubePod) -> str | None:
        """None for a simulated pod: it has no sandbox, so no handler ran one."""
        return None if self.is_simulated(pod) else super().sandbox_handler(pod)

    def host_pids(self, pod: KubePod) -> list[int]:
        """None for a simulated pod: nothing runs for it."""
        return [] if self.is_simulated(pod) else super().host_pids(pod)

    def node_kernel(self, pod: KubePod) -> str | None:
        """A simulated pod's node reports the recording node's kernel (its node info is a
        copy), and its reports are that node's: the kernel checks judge the recording, as
        every other check of a simulated cell does, so the same judging code runs and
        costs what it costs on a real fleet. They prove nothing about a simulated node."""
        if self.is_simulated(pod):
            return KubeCluster.node_kernel(self, pod)
        return super().node_kernel(pod)

    def nodes_lacking(self, handler: str) -> list[str]:
        """Every simulated node lists every selected handler; the real node has them all."""
        return []

    # -- evidence -------------------------------------------------------------------------

    def component_logs(self) -> dict[str, str]:
        logs = super().component_logs()
        if "kwok" in self.components:
            logs["kwok"] = self.components["kwok"].log_tail()
        if self.pod_logs is not None and self.pod_logs.problems:
            logs["kwok pod logs"] = "\n".join(self.pod_logs.problems[-20:])
        return logs

    def environment(self) -> dict[str, Any]:
        env = super().environment()
        env["kwok"] = {"pinned": KWOK_VERSION, "simulated_nodes": len(self.simulated),
                       "node_selector": SIMULATED_SELECTOR, "recording_node": NODE_NAME,
                       "recordings": sorted(str(p.relative_to(self.recordings_dir))
                                            for p in self.recordings_dir.rglob("*.log"))
                       if self.recordings_dir.is_dir() else []}
        return env

    def reach_hint(self) -> list[str]:
        return [*super().reach_hint(),
                f"  kwok: {len(self.simulated)} simulated nodes ({SIMULATED_SELECTOR}), "
                f"log {self.workdir / 'logs' / 'kwok.log'}; a new pod labelled "
                f"{RUNTIME_LABEL} on them stays Pending until annotated {SERVED_ANNOTATION} "
                f"(the run that served its logs has ended)"]

    # -- teardown -------------------------------------------------------------------------

    def stop(self) -> None:
        """The pod log watch first (nothing is served during teardown), then the local
        cluster's teardown, kwok stopped first after the run's namespace went."""
        if self.pod_logs is not None and not self.keep:
            try:
                self.pod_logs.close()
            except Exception as exc:
                self.progress(f"kwok cluster teardown: closing the pod log watch: {exc}")
        if getattr(self, "simulator_client", None) is not None:
            self.simulator_client.close()
            self.simulator_client = None
        super().stop()


def open_backend(settings: BackendSettings) -> KwokCluster:
    """The kwok backend for ``settings``, not started; UserError for bad options."""
    nodes = settings.options.get("kwok_nodes")
    return KwokCluster(settings.runtimes, settings.run_id, settings.image,
                       nodes=DEFAULT_NODES if nodes is None else nodes,
                       containerd=settings.options.get("containerd"), keep=settings.keep,
                       progress=settings.progress)

