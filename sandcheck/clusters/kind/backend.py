"""The kind backend: a kind cluster with the catalog's handlers, on a private dockerd.

start(): a private dockerd (work dir ``/var/tmp/sandcheck/kind-<run id>``), the node image
(``--kind-image``, default sandcheck's offline image, built and loaded on demand),
``kind create cluster`` whose ``containerdConfigPatches`` (the patcher's, v2 keys) register
the handlers every node gets, the runtimes added to the running nodes by ``nodes`` (the
same step a user's image goes through) on the nodes ``layout`` picks, labels, the probe
image through ``kind load image-archive``, RuntimeClasses, and one pod per class. A failed
start exports ``kind export logs`` into the report dir. stop() deletes only what the run
created: the cluster, the engine, its work dir; dockerd's host settings are put back.

``--kind-cluster NAME`` uses an existing cluster in the engine at DOCKER_HOST: nothing is
created or deleted but the run's namespace and RuntimeClasses (the install step is
idempotent: on a cluster a kept run left it changes nothing). Only a cluster the run
creates takes upstream suites' images and registry routes (``images``).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import tomlkit

from sandcheck.catalog import Runtime
from sandcheck.clusters.base import BackendSettings, Capability
from sandcheck.clusters.kind import layout, nodeconfig
from sandcheck.clusters.kind.cli import CLUSTER_PREFIX, Kind
from sandcheck.clusters.kind.engine import UserEngine, private_engine, record_bridges
from sandcheck.clusters.kind.images import KindImageNodes
from sandcheck.clusters.kind.nodes import CRI_ENDPOINT, NodeInstaller, host_lacks
from sandcheck.clusters.kind.registry import CONFIG_PATH_PATCH, KindRegistry
from sandcheck.clusters.kube import KubeCluster, KubePod
from sandcheck.containerd.images import PROBE_IMAGE, ProbeImage
from sandcheck.errors import ComponentError, UserError
from sandcheck.host import proc as hostproc
from sandcheck.host.workdir import WORK_BASE, claim, delete_tree
from sandcheck.progress import Progress, quiet
from sandcheck.provision.kindnode import load_node_image
from sandcheck.provision.kindnode.build import REPOSITORY
from sandcheck.provision.kindnode.clusterconfig import cluster_config, render
from sandcheck.provision.pins import KIND_VERSION
from sandcheck.timeouts import TIMEOUTS, wait_until

WAIT_READY = "240s"
INSTALLS_AT_ONCE = 8
"""Nodes whose handlers are installed at the same time."""
NAME_PATTERN = r"[a-z0-9]([-a-z0-9]{0,48}[a-z0-9])?"
"""kind cluster names become container and network names."""
KUBELET_PATCH = {"apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
                 "oomScoreAdj": 0, "cgroupDriver": nodeconfig.CGROUP_DRIVER}
"""kubelet keeps its oom_score_adj (lowering it needs CAP_SYS_RESOURCE) and drives cgroupfs
(see nodeconfig: crun's systemd driver needs a D-Bus daemon kind's nodes lack)."""


def kind_config(workers: int, own_image: bool, runtimes: list[Runtime]) -> dict[str, Any]:
    """sandcheck's offline image needs clusterconfig's settings (no kindnet, kube-proxy or
    CoreDNS: it holds none of their images); a user's image (kindest/node) keeps kind's
    defaults. Both get the kubelet patch and the handlers every node has."""
    if own_image:
        config = cluster_config(workers)
    else:
        config = {"kind": "Cluster", "apiVersion": "kind.x-k8s.io/v1alpha4",
                  "nodes": [{"role": "control-plane"}] + [{"role": "worker"}] * workers,
                  "kubeadmConfigPatches": []}
    config["kubeadmConfigPatches"] = [*config["kubeadmConfigPatches"], json.dumps(KUBELET_PATCH)]
    common = [rt for rt in runtimes if layout.everywhere(rt)]
    config["containerdConfigPatches"] = [nodeconfig.create_patch(common),
                                         tomlkit.dumps(CONFIG_PATH_PATCH)]
    return config


class KindCluster(KubeCluster):
    name = "kind"
    step_label = "kind"
    level = "Kubernetes"
    # The nodes are containers of an engine on this host: their processes and cgroups are
    # this host's, their kernel is this host's; containerd is reached with crictl inside
    # the node. No CRI_DIRECT: kubelet kills sandboxes made behind its back.
    capabilities = frozenset({Capability.KUBERNETES_API, Capability.HOST_PROCESSES,
                              Capability.CRI_INSPECT, Capability.NODE_CGROUPS,
                              Capability.NODE_IS_HOST})

    def __init__(self, runtimes: list[Runtime], run_id: str, image: ProbeImage | None,
                 cluster: str | None = None, workers: int = 1, node_image: str | None = None,
                 name: str | None = None, keep: bool = False, report_dir: Path | None = None,
                 registry: bool = False, progress: Progress = quiet):
        super().__init__(runtimes, run_id, image_ref=image.alias if image else PROBE_IMAGE,
                         progress=progress)
        self.probe = image
        self.reuse = cluster is not None
        if not self.reuse:  # a user's cluster keeps its images and registry configuration
            self.capabilities = type(self).capabilities | {Capability.NODE_IMAGES}
        self.cluster = cluster or name or f"{CLUSTER_PREFIX}{run_id}".lower()[:50]
        self.workers = workers
        self.node_image = node_image
        self.keep = keep
        self.report_dir = report_dir
        self.workdir = WORK_BASE / f"kind-{run_id}"
        self.kubeconfig_path = self.workdir / "kubeconfig"
        self.engine = None
        self.kind: Kind | None = None
        self.plans: list[layout.NodePlan] = []
        self.installed: dict[str, list[str]] = {}
        self.registry: KindRegistry | None = None
        self.wants_registry = registry
        self.created = False
        self._stopped = False

    # -- bring-up ---------------------------------------------------------------------------

    def start(self) -> None:
        """Bring the cluster up; on a failure, export kind's logs, then remove what the run
        made (on Ctrl-C too: pytest runs no finalizer of an interrupted setup)."""
        try:
            self._start()
        except BaseException as exc:
            if isinstance(exc, (ComponentError, UserError)) and (self.created or self.reuse):
                self.progress(self.export_logs())
            if not self.keep:
                self.stop()
            raise

    def _start(self) -> None:
        t0 = time.monotonic()
        claim(self.workdir)  # `sandcheck cleanup` leaves it alone while this process lives
        if self.reuse:
            self.engine = UserEngine()
        else:
            self.engine = private_engine(self.workdir, self.run_id, self.progress)
            self._step("engine_seconds", self.engine.start)
        self.kind = Kind(self.engine.env())
        if self.reuse:
            if self.cluster not in self.kind.clusters():
                raise UserError(f"--kind-cluster {self.cluster}: no such kind cluster in the "
                                f"engine at {self.engine.host} (set DOCKER_HOST to its engine)")
        else:
            self._step("create_seconds", self._create)
        self.kind.kubeconfig(self.cluster, self.kubeconfig_path)
        self.connect()
        self._step("runtimes_seconds", self._install_runtimes)
        self._step("load_probe_seconds", self._load_probe)
        self.runtimes = layout.scheduled(self.runtimes, self.plans)
        self.ensure_runtime_classes()
        self.ensure_namespace()
        self._step("handler_check_seconds", self._check_handlers)
        self.timings["total_seconds"] = time.monotonic() - t0

    def _create(self) -> None:
        own_image = self.node_image is None or self.node_image.startswith(f"{REPOSITORY}:")
        if self.node_image is None:
            self.node_image = load_node_image(self.engine, self.progress)
        path = self.workdir / "kind-config.json"
        path.write_text(render(kind_config(self.workers, own_image, self.runtimes)))
        self.created = True
        self.kind.run("create", "cluster", "--name", self.cluster, "--image", self.node_image,
                      "--config", str(path), "--kubeconfig", str(self.kubeconfig_path),
                      "--wait", WAIT_READY, timeout=TIMEOUTS.cluster_start)
        record_bridges(self.engine, self.workdir)

    def _install_runtimes(self) -> None:
        for rt in list(self.runtimes):
            why = host_lacks(rt)
            if why is not None:  # no RuntimeClass; its checks skip naming this
                self.missing_runtimes[rt.name] = why
                self.runtimes.remove(rt)
        self.plans = layout.plan(self.kind.nodes(self.cluster), self.runtimes)

        def install(plan) -> None:
            done = NodeInstaller(self.engine, plan.node, self.progress).install(
                list(plan.runtimes))
            self.installed[plan.node] = done
            self.progress(f"kind node {plan.node}: handlers "
                          f"{', '.join(rt.handler for rt in plan.runtimes)}"
                          f"{'; ' + '; '.join(done) if done else ' (already there)'}")
            self.core.patch_node(plan.node, {"metadata": {"labels": plan.labels}},
                                 _request_timeout=TIMEOUTS.api_call)

        # Every node at once: a node's install (copy binaries, patch its containerd config,
        # restart containerd) touches that node only, so workers add no time of their own.
        with ThreadPoolExecutor(max_workers=max(1, min(len(self.plans), INSTALLS_AT_ONCE)),
                                thread_name_prefix="sandcheck-kind-install") as pool:
            for future in [pool.submit(install, plan) for plan in self.plans]:
                future.result()
        self._wait_nodes_ready()

    def _wait_nodes_ready(self) -> None:
        """containerd restarted under kubelet: every node Ready again (bounded)."""
        last: dict[str, str] = {}

        def ready() -> bool | None:
            nodes = self.core.list_node(_request_timeout=TIMEOUTS.api_call).items
            waiting = [n.metadata.name for n in nodes if not any(
                c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])]
            last["waiting"] = ", ".join(waiting)
            return True if nodes and not waiting else None

        wait_until(ready, TIMEOUTS.node_ready, "kind nodes to be Ready",
                   interval=TIMEOUTS.slow_poll,
                   state=lambda: f"not Ready: {last.get('waiting')}")

    def _load_probe(self) -> None:
        """Into every node: by ``kind load``, or pushed to the run's local registry and
        pulled by the nodes (--kind-registry); nothing with --image (the nodes pull it)."""
        if self.probe is None or self.image_from_registry:
            return
        if not self.wants_registry:
            self.kind.run("load", "image-archive", str(self.probe.archive), "--name",
                          self.cluster, timeout=TIMEOUTS.image_import)
            return
        self.serving_registry().start()
        self.use_image(self.registry.push(self.probe.archive, self.probe.ref.rsplit(":")[-1]))
        self.core.create_namespaced_config_map("kube-public", self.registry.hosting_configmap(),
                                               _request_timeout=TIMEOUTS.api_call)

    def serving_registry(self) -> KindRegistry:
        """The cluster's registry container (made on first use, started by the caller)."""
        if self.registry is None:
            self.registry = KindRegistry(self.engine, self.cluster,
                                         self.kind.nodes(self.cluster), self.run_id,
                                         self.progress)
        return self.registry

    def image_node(self) -> KindImageNodes:
        return KindImageNodes(self.engine, self.kind, self.cluster, self.serving_registry)

    def _check_handlers(self) -> None:
        for handler, why in self.handler_check(timeout=TIMEOUTS.pod_start).items():
            raise ComponentError(f"handler {handler!r} installed on kind nodes "
                                 f"{self.nodes_with(handler)} but its pod did not run: {why}")

    # -- what suites ask --------------------------------------------------------------------

    def nodes_with(self, handler: str) -> list[str]:
        return [p.node for p in self.plans if any(rt.handler == handler for rt in p.runtimes)]

    def nodes_lacking(self, handler: str) -> list[str]:
        return layout.lacking(handler, self.plans)

    def node_names(self) -> list[str]:
        """Nodes that carry every selected handler first (the first worker), so a check
        that pins a pod to "a node" gets one where all its classes can run."""
        names = super().node_names()
        full = {p.node for p in self.plans if len(p.runtimes) == len(self.runtimes)}
        return sorted(names, key=lambda n: (n not in full, n))

    def _crictl(self, node: str, *args: str) -> str:
        return self.engine.docker("exec", node, "crictl", "--runtime-endpoint", CRI_ENDPOINT,
                                  *args, check=False, timeout=TIMEOUTS.api_call).stdout

    def _ids(self, pod: KubePod) -> tuple[str | None, list[str], list[str]]:
        """(node, sandbox ids, container ids) of a pod, from containerd in its node."""
        node = pod.node_name or (pod.read().get("spec") or {}).get("nodeName")
        if not node or self.engine is None:
            return node, [], []
        sandboxes = self._crictl(node, "pods", "-q", "--name", pod.name, "--namespace",
                                 pod.namespace).split()
        containers = [c for s in sandboxes
                      for c in self._crictl(node, "ps", "-a", "-q", "--pod", s).split()]
        return node, sandboxes, containers

    def inspect_pod(self, pod: KubePod) -> dict[str, Any]:
        """`crictl inspectp`/`inspect` in the pod's node: containerd's own record."""
        node, sandboxes, containers = self._ids(pod)
        found: dict[str, Any] = {}
        for key, argv in (("sandbox", ["inspectp", *sandboxes[:1]]),
                          ("container", ["inspect", *containers[:1]])):
            if len(argv) < 2:
                continue
            try:
                found[key] = json.loads(self._crictl(node, *argv))
            except json.JSONDecodeError:
                continue
        return found

    def host_pids(self, pod: KubePod) -> list[int]:
        """Host processes naming the pod's sandbox or containers (shim, runsc's sandbox
        and gofer): node containers share this host's process table."""
        _, sandboxes, containers = self._ids(pod)
        return sorted({pid for one in sandboxes + containers
                       for pid, _ in hostproc.processes_mentioning(one)})

    # -- evidence ---------------------------------------------------------------------------

    def export_logs(self) -> str:
        where = Path(self.report_dir or "sandcheck-report") / f"kind-logs-{self.run_id}"
        if self.kind is None:
            return "kind logs: no cluster"
        return self.kind.export_logs(self.cluster, where.resolve())

    def component_logs(self) -> dict[str, str]:
        if self.engine is None or not self.plans:
            return {}
        logs = {}
        for plan in self.plans:
            proc = self.engine.docker("exec", plan.node, "journalctl", "--no-pager", "-n", "20",
                                      "-u", "containerd", "-u", "kubelet", check=False,
                                      timeout=TIMEOUTS.api_call)
            logs[f"{plan.node} containerd+kubelet"] = proc.stdout[-4000:]
        return logs

    def environment(self) -> dict[str, Any]:
        env: dict[str, Any] = {
            "backend": self.name, "kind": KIND_VERSION, "cluster": self.cluster,
            "cluster_created_by_run": not self.reuse,
            "node_image": self.node_image or "(the existing cluster's)",
            **self.image_environment(),
            "kubernetes": self.server_version(),
            "start_seconds": {k: round(v, 2) for k, v in self.timings.items()},
            "node_handlers": {p.node: [rt.handler for rt in p.runtimes] for p in self.plans},
            "node_install": self.installed,
            "handlers_verified": dict(self.verified),
            "handlers_missing": dict(self.missing_handlers),
        }
        try:
            env["engine"] = self.engine.docker("version", "--format", "{{.Server.Version}}",
                                               timeout=TIMEOUTS.api_call).stdout.strip()
        except Exception as exc:  # evidence only
            env["engine"] = f"not readable: {exc}"
        if self.registry is not None:
            env["registry"] = self.registry.environment([p.node for p in self.plans])
        env["nodes"] = self.nodes_fingerprint()
        return env

    # -- teardown ---------------------------------------------------------------------------

    def reach_hint(self) -> list[str]:
        host = getattr(self.engine, "host", "?")
        return ["kind cluster kept (--keep-cluster):",
                f"  DOCKER_HOST={host} kind get nodes --name {self.cluster}",
                f"  kubectl --kubeconfig {self.kubeconfig_path} get nodes,pods -A",
                f"  reuse: --backend kind --kind-cluster {self.cluster} with that DOCKER_HOST",
                f"  remove: `sandcheck cleanup` (the engine's work dir is {self.workdir})"]

    def stop(self) -> None:
        """Remove what the run made, every step even when one fails; safe twice."""
        if self._stopped:
            return
        if self.keep:
            if self.engine is not None:
                for line in self.reach_hint():
                    self.progress(line)
            return
        self._stopped = True
        steps: list[tuple[str, Callable[[], object]]] = []
        if self.reuse:
            steps += [("delete namespace", lambda: self.delete_namespace(TIMEOUTS.pod_delete)),
                      ("delete RuntimeClasses", self.delete_runtime_classes)]
        elif self.created and self.kind is not None:
            steps.append(("kind delete cluster", lambda: self.kind.run(
                "delete", "cluster", "--name", self.cluster, timeout=TIMEOUTS.cluster_start)))
        steps.append(("close API client", self._close_client))
        if not self.reuse and self.engine is not None:
            steps.append(("stop dockerd", self._stop_engine))
        steps.append(("remove work dir", self._remove_workdir))
        for what, step in steps:
            try:
                step()
            except Exception as exc:
                self.progress(f"kind teardown: {what} failed: {exc}")

    def _stop_engine(self) -> None:
        # veth and bridges of other runs on this machine come and go meanwhile: only
        # settings, firewall rules and a docker-made bridge left behind can be this run's.
        for line in self.engine.stop():
            if line.startswith(("sysctl", "new link br-")) or "rules" in line:
                self.progress(f"kind teardown: host differs after the run: {line}")

    def _remove_workdir(self) -> None:
        delete_tree(self.workdir)

    def _close_client(self) -> None:
        if self.api_client is not None:
            try:
                self.api_client.close()
            finally:
                self.api_client = None


def open_backend(settings: BackendSettings) -> KindCluster:
    """The kind backend for ``settings``, not started; UserError for bad options."""
    opts = settings.options
    workers = opts.get("kind_workers")
    workers = 1 if workers is None else int(workers)
    if workers < 0:
        raise UserError(f"--kind-workers {workers}: give 0 or more workers")
    if opts.get("kind_registry") and opts.get("kind_cluster"):
        raise UserError("--kind-registry starts a registry for a cluster the run creates; for "
                        "--kind-cluster push the image with `sandcheck push-image` and pass "
                        "--image")
    if opts.get("kind_registry") and settings.image_ref:
        raise UserError("--kind-registry and --image both choose the pods' image: drop one")
    name = opts.get("kind_name")
    if name is not None and not re.fullmatch(NAME_PATTERN, name):
        raise UserError(f"--kind-name {name!r}: use lowercase letters, digits and '-'")
    return KindCluster(settings.runtimes, settings.run_id, settings.image,
                       cluster=opts.get("kind_cluster"), workers=workers,
                       node_image=opts.get("kind_image"), name=name, keep=settings.keep,
                       report_dir=opts.get("report_dir"),
                       registry=bool(opts.get("kind_registry")), progress=settings.progress)
