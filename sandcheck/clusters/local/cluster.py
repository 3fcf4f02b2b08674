"""The local backend: a real single-node Kubernetes made of the real components.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kubelet (the pinned
builds of ``sandcheck provision --kubernetes``) run as plain processes on this machine;
the node is the node backend's private containerd (catalog handlers verified, CNI bridge,
probe image imported), which kubelet drives over CRI. Everything listens on 127.0.0.1
only, on ports picked free at start, with certificates from a CA made for the run.

Everything lives under one work dir (``/var/tmp/sandcheck/local-<run id>``): certs,
kubeconfigs, etcd's data, kubelet's root and cert dirs, every log. How kubelet is kept
from changing the host (kernel tunables, cgroups, /etc/hosts) is in ``kubelet``; what
it still leaves outside the work dir, and its removal, in ``leftovers``.
"""

from __future__ import annotations

import json
import os
import platform
import ssl
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from sandcheck.catalog import Runtime
from sandcheck.clusters.base import BackendSettings, Capability
from sandcheck.clusters.kube import KubeCluster, KubePod
from sandcheck.clusters.local.binaries import find_binaries
from sandcheck.clusters.local.components import Component, free_port
from sandcheck.clusters.local.kubelet import (
    LOOPBACK,
    NODE_NAME,
    cgroup_root,
    hosts_file,
    in_mount_namespace,
    kubelet_config,
    max_pods_checked,
    sysctl_binds,
)
from sandcheck.clusters.local.leftovers import CONTAINER_LOGS_DIR, remove_leftovers
from sandcheck.clusters.local.pki import (
    KUBECONFIG_CLIENTS,
    Pki,
    cluster_requests,
    write_kubeconfig,
)
from sandcheck.clusters.node import NodeBackend, sandbox_pids
from sandcheck.containerd.images import PROBE_IMAGE, ProbeImage
from sandcheck.host import proc as hostproc
from sandcheck.host import runcgroups
from sandcheck.host.cgroups import make_subtree
from sandcheck.host.daemon import LOG_TAIL
from sandcheck.host.footprint import Footprint
from sandcheck.host.memory import process_name
from sandcheck.host.workdir import WORK_BASE, claim, delete_tree
from sandcheck.progress import Progress, quiet
from sandcheck.provision.paths import search_path
from sandcheck.provision.pins import ETCD_VERSION, KUBERNETES_VERSION
from sandcheck.timeouts import TIMEOUTS, wait_until

SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"
E2E_TEST_HANDLER = "test-handler"
"""The handler Kubernetes' e2e RuntimeClass specs expect on every node
(PreconfiguredRuntimeClassHandler): configured as the default runtime is, as Kubernetes'
own test clusters configure it (cluster/gce/gci/configure-helper.sh)."""
STOP_ORDER = ("kubelet", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd")
"""Components stop in reverse dependency order: nothing loses its server while it runs."""


class LocalCluster(KubeCluster):
    name = "local"
    step_label = "local cluster"
    level = "Kubernetes"
    # No CRI_DIRECT: kubelet owns this containerd, and its housekeeping kills every sandbox
    # made behind its back within seconds ("Clean up containers for orphaned pod we had
    # not seen before"), so a crictl loop here measures kubelet, not the runtime.
    capabilities = frozenset({Capability.KUBERNETES_API, Capability.HOST_PROCESSES,
                              Capability.CRI_INSPECT, Capability.NODE_CGROUPS,
                              Capability.NODE_IS_HOST, Capability.NODE_IMAGES,
                              Capability.RUN_FOOTPRINT, Capability.CONTROL_PLANE_PROCESSES})
    stop_order = STOP_ORDER

    def __init__(self, runtimes: list[Runtime], run_id: str, image: ProbeImage | None,
                 containerd: str | None = None, keep: bool = False,
                 progress: Progress = quiet, max_pods: int | None = None):
        """Nothing is made or started here; a bad ``containerd`` or ``max_pods`` (kubelet's
        maxPods, --max-pods) raises UserError."""
        super().__init__(runtimes, run_id, image_ref=image.alias if image else PROBE_IMAGE,
                         progress=progress)
        self.keep = keep
        self.max_pods = max_pods_checked(max_pods)
        self.node = NodeBackend(runtimes, run_id, image, containerd=containerd, keep=keep,
                                progress=progress, default_alias=E2E_TEST_HANDLER)
        self.workdir = WORK_BASE / f"local-{run_id}"
        self.pki = Pki(self.workdir / "pki")
        self.kubeconfig_path = self.workdir / "admin.kubeconfig"
        self.components: dict[str, Component] = {}
        self.ports: dict[str, int] = {}
        self.cgroup_root = cgroup_root(run_id)
        self.bins: dict[str, str] = {}
        self._logs_dir_existed = True
        self._stopped = False

    @property
    def server(self) -> str:
        return f"https://{LOOPBACK}:{self.ports['apiserver']}"

    # -- bring-up -----------------------------------------------------------------------

    def start(self) -> None:
        """Bring the cluster up; on any failure or interrupt, tear down what came up
        (pytest runs no finalizer of a fixture whose setup was interrupted)."""
        try:
            self._start()
        except BaseException:
            if not self.keep:
                self.stop()
            raise

    def _start(self) -> None:
        t0 = time.monotonic()
        deadline = t0 + TIMEOUTS.cluster_start
        self.bins = find_binaries()
        claim(self.workdir)
        self._logs_dir_existed = CONTAINER_LOGS_DIR.exists()
        self._step("node_seconds", self._start_node)
        self.ports = {name: free_port(LOOPBACK) for name in
                      ("etcd", "etcd_peer", "apiserver", "kubelet", "kubelet_healthz")}
        self._step("pki_seconds", self._make_pki)
        self._step("etcd_seconds", lambda: self._start_etcd(deadline))
        self._step("apiserver_seconds", lambda: self._start_apiserver(deadline))
        self.connect()
        self._start_controllers()
        self._step("node_ready_seconds", self._start_kubelet)
        self.ensure_runtime_classes()
        # Its default ServiceAccount comes from the controllers.
        self._step("namespace_seconds", self.ensure_namespace)
        self.timings["total_seconds"] = time.monotonic() - t0

    def _start_node(self) -> None:
        self.node.start()
        self.verified = dict(self.node.verified)
        # Runtimes the node lacks get no RuntimeClass; their checks skip, naming why.
        self.missing_runtimes = dict(self.node.missing_runtimes)
        self.runtimes = list(self.node.runtimes)

    def _make_pki(self) -> None:
        self.pki.make_ca()
        self.pki.service_account_keys()
        for req in cluster_requests(NODE_NAME, LOOPBACK, SERVICE_IP):
            self.pki.issue(req)
            if req.name in KUBECONFIG_CLIENTS:
                path = (self.kubeconfig_path if req.name == "admin"
                        else self.workdir / f"{req.name}.kubeconfig")
                write_kubeconfig(path, self.server, self.pki, req)

    def _component(self, name: str, argv: list[str], env: dict[str, str] | None = None
                   ) -> Component:
        comp = Component(name, argv, self.workdir / "logs" / f"{name}.log", env=env,
                         cgroup=f"{self.cgroup_root}/components")
        self.components[name] = comp
        comp.start()
        return comp

    def _start_etcd(self, deadline: float) -> None:
        p = self.ports
        peer = f"http://{LOOPBACK}:{p['etcd_peer']}"
        client = f"http://{LOOPBACK}:{p['etcd']}"
        comp = self._component("etcd", [
            self.bins["etcd"], "--name", "sandcheck", "--data-dir", str(self.workdir / "etcd"),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"sandcheck={peer}", "--initial-cluster-state", "new",
            # A throwaway cluster: durability is not worth fsync latency on a busy VM.
            "--unsafe-no-fsync", "--log-level", "warn",
        ])
        comp.wait_http(f"{client}/health", _left(deadline),
                       ok=lambda body: '"health":"true"' in body)

    def _start_apiserver(self, deadline: float) -> None:
        pki, p = self.pki, self.ports
        # The API server (alone) resolves NODE_NAME to 127.0.0.1, where kubelet listens,
        # through an /etc/hosts of its own (see kubelet's module docstring).
        hosts = self.workdir / "apiserver-hosts"
        try:
            original = Path("/etc/hosts").read_text()
        except OSError:
            original = ""
        hosts.write_text(hosts_file(original, (NODE_NAME,)))
        comp = self._component("kube-apiserver", in_mount_namespace([(hosts, "/etc/hosts")], "/", [
            self.bins["kube-apiserver"],
            f"--etcd-servers=http://{LOOPBACK}:{p['etcd']}",
            f"--bind-address={LOOPBACK}", f"--advertise-address={LOOPBACK}",
            f"--secure-port={p['apiserver']}",
            f"--tls-cert-file={pki.path('apiserver', 'crt')}",
            f"--tls-private-key-file={pki.path('apiserver', 'key')}",
            f"--client-ca-file={pki.path('ca', 'crt')}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki.path('sa', 'pub')}",
            f"--service-account-signing-key-file={pki.path('sa', 'key')}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--allow-privileged=true",
            f"--kubelet-client-certificate={pki.path('apiserver-kubelet-client', 'crt')}",
            f"--kubelet-client-key={pki.path('apiserver-kubelet-client', 'key')}",
            f"--kubelet-certificate-authority={pki.path('ca', 'crt')}",
            "--kubelet-preferred-address-types=Hostname",
            # 127.0.0.1 is no valid endpoint for the `kubernetes` Service; nothing here
            # reaches the API through it.
            "--endpoint-reconciler-type=none",
            f"--cert-dir={self.workdir / 'apiserver'}",
            "--profiling=false",
            "--v=1",
        ]))
        ctx = ssl.create_default_context(cafile=str(pki.path("ca", "crt")))
        ctx.load_cert_chain(str(pki.path("admin", "crt")), str(pki.path("admin", "key")))
        comp.wait_http(f"{self.server}/readyz", _left(deadline), ssl_context=ctx,
                       ok=lambda body: body.strip() == "ok")

    def _start_controllers(self) -> None:
        pki = self.pki
        self._component("kube-controller-manager", [
            self.bins["kube-controller-manager"],
            f"--kubeconfig={self.workdir / 'controller-manager.kubeconfig'}",
            f"--service-account-private-key-file={pki.path('sa', 'key')}",
            f"--root-ca-file={pki.path('ca', 'crt')}",
            "--use-service-account-credentials=true",
            "--leader-elect=false", "--secure-port=0", f"--bind-address={LOOPBACK}",
            "--controllers=*,-csrsigning,-csrapproving,-csrcleaner",
            "--v=1",
        ])
        self._component("kube-scheduler", [
            self.bins["kube-scheduler"],
            f"--kubeconfig={self.workdir / 'scheduler.kubeconfig'}",
            "--leader-elect=false", "--secure-port=0", f"--bind-address={LOOPBACK}",
            "--v=1",
        ])

    def _start_kubelet(self) -> None:
        pki = self.pki
        root = self.workdir / "kubelet"
        root.mkdir(parents=True, exist_ok=True)
        # A shared mount: what kubelet mounts below it in its own mount namespace
        # propagates to the host's, where containerd and runc look.
        hostproc.run(["mount", "--bind", str(root), str(root)])
        hostproc.run(["mount", "--make-shared", str(root)])
        fakes = sysctl_binds(self.workdir / "kubelet-sysctl")
        resolv = self.workdir / "resolv.conf"
        resolv.write_text(f"nameserver {LOOPBACK}\noptions ndots:1\n")
        make_subtree(self.cgroup_root)  # kubelet insists its cgroup root exists
        config = self.workdir / "kubelet-config.yaml"
        config.write_text(yaml.safe_dump(kubelet_config(
            port=self.ports["kubelet"], healthz_port=self.ports["kubelet_healthz"],
            ca=pki.path("ca", "crt"), cert=pki.path("kubelet-serving", "crt"),
            key=pki.path("kubelet-serving", "key"), cgroup_root=self.cgroup_root,
            resolv_conf=resolv, pod_logs=self.workdir / "pod-logs",
            plugins=self.workdir / "volume-plugins", endpoint=self.node.daemon.endpoint,
            max_pods=self.max_pods), sort_keys=False))
        # Only /proc is made private in kubelet's namespace: its root dir stays a peer of
        # the host's (see above).
        self._component("kubelet", in_mount_namespace(fakes, "/proc", [
            self.bins["kubelet"],
            f"--config={config}",
            f"--kubeconfig={self.workdir / 'kubelet.kubeconfig'}",
            f"--root-dir={root}",
            f"--cert-dir={self.workdir / 'kubelet-pki'}",
            f"--hostname-override={NODE_NAME}",
            "--v=2",
        ]), env={**os.environ, "PATH": search_path()})
        self._wait_node_ready()

    def _wait_node_ready(self) -> None:
        from kubernetes.client.rest import ApiException

        last = ["not registered"]

        def ready() -> bool | None:
            for comp in self.components.values():
                comp.check()
            try:
                node = self.core.read_node(NODE_NAME, _request_timeout=TIMEOUTS.api_call)
            except ApiException as exc:
                if exc.status != 404:
                    last[0] = f"{exc.status} {exc.reason}"
                return None
            cond = next((c for c in node.status.conditions or [] if c.type == "Ready"), None)
            if cond is not None and cond.status == "True":
                return True
            if cond is not None:
                last[0] = f"Ready={cond.status} ({cond.reason}: {cond.message})"
            return None

        wait_until(ready, TIMEOUTS.node_ready, f"node {NODE_NAME} to be Ready",
                   interval=TIMEOUTS.slow_poll, state=lambda: last[0] + self._logs_text())

    def image_node(self) -> NodeBackend:
        return self.node

    def reach_hint(self) -> list[str]:
        """How to reach a kept cluster, and how to remove it later."""
        kubectl = self.bins.get("kubectl", "kubectl")
        daemon = self.node.daemon
        return ["local cluster kept running (--keep-cluster):",
                f"  {kubectl} --kubeconfig {self.kubeconfig_path} get nodes,pods -A",
                f"  logs: {self.workdir / 'logs'}, containerd log: "
                f"{daemon.log_path if daemon else '?'}",
                f"  remove it with `sandcheck cleanup` (everything is under {self.workdir} "
                f"and {self.node.workdir})"]

    # -- evidence -------------------------------------------------------------------------

    def component_memory(self) -> dict[str, dict[str, int]]:
        """Resident memory of each component now and at its peak (a fleet run's cost on
        the control plane)."""
        found = {}
        for name, component in self.components.items():
            if component.proc is not None:
                mem = hostproc.memory(component.proc.pid)
                if mem:
                    found[name] = mem
        return found

    def component_logs(self) -> dict[str, str]:
        logs = {}
        if "kubelet" in self.components:
            logs["kubelet"] = self.components["kubelet"].log_tail()
        if self.node.daemon is not None:
            logs["containerd"] = self.node.daemon.log_tail(LOG_TAIL)
        return logs

    def footprint(self) -> Footprint:
        """The node's (containerd, its cgroups, mounts, IPAM, bridge) with kubelet, its
        cgroup root (the pods' cgroups, the components) and its work dir (pod volumes)."""
        node = self.node.footprint()
        kubelet = next((pid for pid in runcgroups.members(f"{self.cgroup_root}/components")
                        if process_name(pid) == "kubelet"), None)
        return replace(node, daemons={**node.daemons, **({"kubelet": kubelet} if kubelet else {})},
                       cgroups=(*node.cgroups, self.cgroup_root),
                       mount_prefixes=(*node.mount_prefixes, str(self.workdir)))

    def environment(self) -> dict[str, Any]:
        env: dict[str, Any] = {"backend": self.name, "kubernetes": self.server_version(),
                               "kubernetes_pinned": KUBERNETES_VERSION,
                               "etcd_pinned": ETCD_VERSION,
                               "start_seconds": {k: round(v, 2) for k, v in self.timings.items()},
                               **self.image_environment()}
        try:
            info = self.core.read_node(NODE_NAME,
                                       _request_timeout=TIMEOUTS.api_call).status.node_info
            env["node_info"] = {"kubelet": info.kubelet_version,
                                "container_runtime": info.container_runtime_version,
                                "kernel": info.kernel_version}
        except Exception as exc:  # evidence only: the run goes on without it
            env["node_info"] = f"not readable: {exc}"
        node_env = self.node.environment()
        node_env.pop("backend", None)
        env["node"] = node_env
        env["handlers_verified"] = node_env.get("handlers_verified")
        env["runtime_preconditions"] = node_env.get("runtime_preconditions")
        if self.runtimes:
            env["default_handler"] = self.runtimes[0].handler
            env[E2E_TEST_HANDLER] = f"configured as {self.runtimes[0].handler}"
        return env

    def _sandbox_ids(self, pod: KubePod) -> list[str]:
        """CRI sandbox ids of a pod (kubelet names sandboxes after the pod)."""
        return self.node.crictl("pods", "-q", "--name", pod.name, "--namespace",
                                pod.namespace, check=False,
                                timeout=TIMEOUTS.api_call).stdout.split()

    def inspect_pod(self, pod: KubePod) -> dict[str, Any]:
        """`crictl inspectp`/`inspect` of the pod's sandbox and probe container: nanosecond
        timestamps and the runtime handler, from containerd itself."""
        sandboxes = self._sandbox_ids(pod)
        if not sandboxes:
            return {}
        containers = self.node.crictl("ps", "-a", "-q", "--pod", sandboxes[0], check=False,
                                      timeout=TIMEOUTS.api_call).stdout.split()
        found: dict[str, Any] = {}
        for key, argv in (("sandbox", ["inspectp", sandboxes[0]]),
                          ("container", ["inspect", *containers[:1]])):
            if len(argv) < 2:
                continue
            try:
                found[key] = json.loads(self.node.crictl(*argv, check=False,
                                                         timeout=TIMEOUTS.api_call).stdout)
            except json.JSONDecodeError:
                continue
        return found

    def sandbox_handler(self, pod: KubePod) -> str | None:
        """The runtime handler containerd ran the pod's sandbox with (CRI's own answer)."""
        sandbox = self.inspect_pod(pod).get("sandbox") or {}
        return (sandbox.get("status") or {}).get("runtimeHandler")

    def node_kernel(self, pod: KubePod) -> str | None:
        return platform.release()

    def host_pids(self, pod: KubePod) -> list[int]:
        """Shim and sandbox processes of the pod (their command lines name its sandbox)."""
        if self.node.daemon is None:
            return []
        pids: set[int] = set()
        for sandbox in self._sandbox_ids(pod):
            pids.update(sandbox_pids(self.node.daemon, sandbox))
        return sorted(pids)

    # -- teardown -------------------------------------------------------------------------

    def stop(self) -> None:
        """Tear everything down, in order; safe to call again and after a failed start."""
        if self.keep:
            if self.components:
                for line in self.reach_hint():
                    self.progress(line)
            return
        if self._stopped:
            return
        self._stopped = True
        steps = []
        serving = [*self.components.values(), *([self.node.daemon] if self.node.daemon else [])]
        if self.api_client is not None and "kubelet" in self.components and \
                all(d.alive() for d in serving):
            # Pods go while kubelet runs, so their sandboxes are torn down properly. With a
            # component dead they cannot go that way: the run's cgroups are killed below.
            steps.append(("delete namespace", lambda: self.delete_namespace(TIMEOUTS.pod_delete)))
        for name in self.stop_order:
            comp = self.components.get(name)
            if comp is not None:
                steps.append((f"stop {name}", comp.stop))
        steps.append(("close API client", self._close_client))
        # What the run started and outlived its stop (pods of a dead containerd, a
        # component's children) is in the run's cgroups: killed before the node's mounts
        # go. Nothing is found by its command line: a user's `tail -f` of a log lives on.
        steps.append(("kill what is left", lambda: runcgroups.kill_tree(self.cgroup_root)))
        steps.append(("stop node", self.node.stop))
        steps.append(("remove leftovers", lambda: remove_leftovers(
            self.workdir, remove_logs_dir=not self._logs_dir_existed)))
        steps.append(("remove work dir", lambda: delete_tree(self.workdir)))
        # Every step runs even when one fails (this is also the Ctrl-C path).
        for what, step in steps:
            try:
                step()
            except Exception as exc:
                self.progress(f"local cluster teardown: {what} failed: {exc}")

    def _close_client(self) -> None:
        if self.api_client is not None:
            try:
                self.api_client.close()
            finally:
                self.api_client = None


def _left(deadline: float) -> float:
    """Seconds until a monotonic ``deadline`` (none left: zero)."""
    return max(0.0, deadline - time.monotonic())


def open_backend(settings: BackendSettings) -> LocalCluster:
    """The local backend for ``settings``, not started; UserError for a bad --containerd."""
    return LocalCluster(settings.runtimes, settings.run_id, settings.image,
                        containerd=settings.options.get("containerd"), keep=settings.keep,
                        progress=settings.progress, max_pods=settings.options.get("max_pods"))
