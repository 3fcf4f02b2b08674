"""The node backend: no Kubernetes; pods made over CRI with crictl, as kubelet makes them.

A private containerd (config written by the patcher, handlers verified before use),
CNI bridge networking on a per-run bridge (with portmap for pods' host ports), the probe
image imported offline, and a registry host configuration of its own (``config_path``) a
suite can point at a loopback registry.
Every sandbox carries the run label; everything lives under one work dir, and every
process (containerd, its shims, every pod) in one cgroup tree named by the run, so a stop,
a failure or Ctrl-C leaves nothing behind, even with containerd dead, and
``sandcheck cleanup`` finds the rest by the work dir or by the cgroup name.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import tomlkit

from sandcheck.catalog import Runtime
from sandcheck.clusters import nodeconfig
from sandcheck.clusters.base import (
    RUN_LABEL,
    BackendSettings,
    Capability,
    ExecResult,
    PhaseTimes,
    PodSpec,
    unique_name,
)
from sandcheck.clusters.nodebinaries import absent_binaries, binary_builds, default_containerd
from sandcheck.clusters.nodenet import IPAM_DIR, bridge_name, remove_network, write_cni_config
from sandcheck.clusters.podconfig import container_config, sandbox_config
from sandcheck.containerd import config as cc
from sandcheck.containerd import hosts
from sandcheck.containerd.config import containerd_version
from sandcheck.containerd.daemon import PrivateContainerd
from sandcheck.containerd.images import (
    ProbeImage,
    import_archive,
    import_into_containerd,
)
from sandcheck.errors import ComponentError, UserError
from sandcheck.host import proc as hostproc
from sandcheck.host import runcgroups
from sandcheck.host.cgroups import cgroup_mode
from sandcheck.host.files import read_or_empty
from sandcheck.host.footprint import Footprint
from sandcheck.host.workdir import WORK_BASE, claim, delete_tree, run_id_of
from sandcheck.oci.distribution import LoopbackRegistry
from sandcheck.progress import Progress, quiet
from sandcheck.provision.paths import path_dir, search_path
from sandcheck.provision.preconditions import not_runnable
from sandcheck.provision.versions import versions
from sandcheck.timeouts import TIMEOUTS

CRI_NAMESPACE = "k8s.io"


class NodePod:
    """A pod sandbox with one probe container, driven through crictl."""

    def __init__(self, backend: NodeBackend, spec: PodSpec, name: str):
        self.backend = backend
        self.spec = spec
        self.name = name
        self.pod_id: str | None = None
        self.container_id: str | None = None
        self.timings = PhaseTimes()
        self.dir = backend.workdir / "pods" / name

    def exec(self, argv: list[str], timeout: float = TIMEOUTS.exec) -> ExecResult:
        if self.container_id is None:
            raise ComponentError(f"pod {self.name} has no running container")
        start = time.monotonic()
        proc = self.backend.daemon.crictl("exec", "-s", "--timeout", str(int(timeout)),
                                          self.container_id, *argv, timeout=timeout,
                                          check=False)
        seconds = time.monotonic() - start
        return ExecResult(argv=list(argv), exit_code=proc.returncode, stdout=proc.stdout,
                          stderr=proc.stderr, seconds=seconds)

    def inspect(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.pod_id:
            proc = self.backend.daemon.crictl("inspectp", self.pod_id, check=False,
                                              timeout=TIMEOUTS.api_call)
            out["sandbox"] = _json_or_text(proc.stdout or proc.stderr)
        if self.container_id:
            proc = self.backend.daemon.crictl("inspect", self.container_id, check=False,
                                              timeout=TIMEOUTS.api_call)
            out["container"] = _json_or_text(proc.stdout or proc.stderr)
        return out

    def diagnostics(self) -> str:
        parts = [f"pod {self.name} runtime={self.spec.runtime.name} sandbox={self.pod_id} "
                 f"container={self.container_id}"]
        for key, value in self.inspect().items():
            text = json.dumps(value, indent=1)[:3000] if isinstance(value, dict) else value
            parts.append(f"--- crictl inspect {key}:\n{text}")
        parts.append(f"--- containerd log tail:\n{self.backend.daemon.log_tail(40)}")
        return "\n".join(parts)


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return text


class NodeBackend:
    """Pods over CRI on a private containerd of this machine (no Kubernetes)."""

    name = "node"
    level = "CRI"
    capabilities = frozenset({Capability.HOST_PROCESSES, Capability.CRI_INSPECT,
                              Capability.NODE_CGROUPS, Capability.CRI_DIRECT,
                              Capability.NODE_IS_HOST, Capability.RUN_FOOTPRINT})

    def __init__(self, runtimes: list[Runtime], run_id: str, image: ProbeImage | None,
                 containerd: str | None = None, keep: bool = False,
                 progress: Progress = quiet, default_alias: str | None = None):
        """Nothing starts here (the registry makes backends to check their options).
        ``default_alias``: one more handler name configured as the default runtime is."""
        self.runtimes = list(runtimes)
        self.default_alias = default_alias
        self.missing_runtimes: dict[str, str] = {}
        self.preconditions: dict[str, dict[str, Any]] = {}
        """Runtime -> the evidence of its host precondition, tried at start."""
        self.run_id = run_id
        self.image = image
        self.keep = keep
        self.progress = progress
        self.workdir = WORK_BASE / f"node-{run_id}"
        self.cgroup = runcgroups.run_cgroup(run_id, self.name)
        """containerd in ``<cgroup>/containerd``, each pod in ``<cgroup>/pods/pod-<name>``."""
        if containerd is not None:
            default_containerd(containerd)  # a --containerd that does not exist ends here
        self.requested_containerd = containerd
        self._containerd_binary: str | None = None
        self._containerd_version: str | None = None
        self.daemon: PrivateContainerd | None = None
        self.verified: dict[str, Any] = {}

    @property
    def containerd_binary(self) -> str:
        """The containerd this run drives (found at first use: making a backend to check
        its options needs none installed)."""
        if self._containerd_binary is None:
            self._containerd_binary = default_containerd(self.requested_containerd)
        return self._containerd_binary

    @property
    def tool_dirs(self) -> list[str]:
        """containerd's own directory first: its runc shim and ctr are its siblings."""
        return [str(Path(self.containerd_binary).parent), str(path_dir())]

    @property
    def containerd_version(self) -> str:
        if self._containerd_version is None:
            self._containerd_version = containerd_version(self.containerd_binary)
        return self._containerd_version

    # -- bring-up -----------------------------------------------------------------------

    def config_document(self) -> tomlkit.TOMLDocument:
        """containerd config for this run: the catalog's handlers plus private paths."""
        schema = cc.schema_for_version(self.containerd_version) or 2
        return nodeconfig.node_config(self.runtimes, self.workdir, self.image, schema,
                                      self.default_alias)

    def start(self) -> None:
        if self.image is None:
            raise UserError("the node backend needs the probe image: pass the ProbeImage "
                            "that sandcheck.fixtures.image.build_probe_image built")
        self._drop_missing_runtimes()
        claim(self.workdir)
        write_cni_config(self.workdir, self.run_id)
        doc = self.config_document()
        self.daemon = PrivateContainerd(doc, self.workdir / "containerd",
                                        binary=self.containerd_binary,
                                        extra_path=self.tool_dirs, cgroup=self.cgroup)
        self.daemon.start(timeout=TIMEOUTS.daemon_start)
        import_into_containerd(self.image, str(self.daemon.socket), CRI_NAMESPACE,
                               ctr=self._ctr())
        effective = self.daemon.effective_runtimes()
        for rt in self.runtimes:
            got = effective.get(rt.handler)
            if got is None:
                raise ComponentError(f"containerd does not list handler {rt.handler!r} after "
                                     f"loading {self.daemon.config_path}")
            self.verified[rt.handler] = got.get("runtimeType")

    def _drop_missing_runtimes(self) -> None:
        """Leave out runtimes whose binaries this node lacks, or whose host precondition
        fails (gVisor's KVM platform, Kata's check); their checks skip, naming why."""
        path = self._search_path()
        for rt in list(self.runtimes):
            absent = absent_binaries(rt, path)
            if absent:
                how = rt.unavailable or f"run `sandcheck provision --runtimes {rt.name}`"
                self.missing_runtimes[rt.name] = f"{', '.join(absent)} not found: {how}"
                self.runtimes.remove(rt)
        unusable, self.preconditions = not_runnable(self.runtimes, path)
        self.missing_runtimes.update(unusable)
        self.runtimes = [rt for rt in self.runtimes if rt.name not in unusable]
        if not self.runtimes:
            raise UserError("none of the selected runtimes can run here: " + "; ".join(
                f"{k}: {v}" for k, v in self.missing_runtimes.items()))

    def _search_path(self) -> str:
        """The PATH containerd (and so its shims) runs with."""
        return os.pathsep.join([*self.tool_dirs, os.environ.get("PATH", "")])

    def _ctr(self) -> str:
        sibling = Path(self.containerd_binary).parent / "ctr"
        return str(sibling) if sibling.exists() else "ctr"

    def environment(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "containerd": self.containerd_version,
            "handlers_verified": self.verified,
            "probe_image": self.image.ref if self.image else None,
            "cgroup_mode": cgroup_mode(),
            "versions": versions(),
            "runtime_binaries": self._runtime_binaries(),
            "runtime_preconditions": self.preconditions,
        }

    def _runtime_binaries(self) -> dict[str, str]:
        """Which build of each runtime binary containerd runs (see binary_builds)."""
        return binary_builds(self.runtimes, self._search_path())

    # -- pods ----------------------------------------------------------------------------

    def pod_config(self, spec: PodSpec, name: str) -> dict[str, Any]:
        return sandbox_config(spec, name, self.run_id, self.workdir / "pods" / name / "logs",
                              cgroup_parent=self.pod_cgroup(name))

    def container_config(self, spec: PodSpec) -> dict[str, Any]:
        return container_config(spec, self.image.alias, self.run_id)

    def crictl(self, *args: str, timeout: float = TIMEOUTS.command, check: bool = True):
        return self.daemon.crictl(*args, timeout=timeout, check=check)

    def cri_node(self) -> NodeBackend:
        return self

    @property
    def endpoint(self) -> str:
        """containerd's CRI endpoint (``unix://...``), for CRI clients other than crictl."""
        return self.daemon.endpoint

    @property
    def containerd_log(self) -> Path:
        return self.daemon.log_path

    @property
    def registry_config_path(self) -> Path:
        """containerd's ``config_path``: one ``<host>/hosts.toml`` per registry host."""
        return nodeconfig.registry_config_path(self.workdir)

    @property
    def nri_socket(self) -> Path:
        """containerd's NRI socket, where NRI plugins connect."""
        return nodeconfig.nri_socket(self.workdir)

    def import_image(self, archive: Path) -> None:
        """An image archive into CRI's namespace, under the names its index gives."""
        import_archive(archive, str(self.daemon.socket), CRI_NAMESPACE, ctr=self._ctr())

    @property
    def default_handler(self) -> str:
        return self.runtimes[0].handler

    def serving_registry(self) -> LoopbackRegistry:
        """A registry on 127.0.0.1: this containerd runs on this host."""
        return LoopbackRegistry(self.run_id, progress=self.progress)

    def route_registries(self, server: str) -> str:
        """Send every pull, of any registry host, to ``server``; says the hosts file."""
        return str(hosts.route_all(self.registry_config_path, server))

    def registry_routes(self) -> dict[str, dict[str, list[str]]]:
        return {self.name: hosts.endpoints(self.registry_config_path)}

    def pull_logs(self) -> dict[str, str]:
        return {self.name: read_or_empty(self.containerd_log)}

    def inspect_pod(self, pod: NodePod) -> dict[str, Any]:
        return pod.inspect()

    def node_kernel(self, pod: NodePod) -> str:
        return platform.release()

    def create_pod(self, spec: PodSpec) -> NodePod:
        name = unique_name(spec.name_prefix)
        pod = NodePod(self, spec, name)
        pod.dir.mkdir(parents=True, exist_ok=True)
        (pod.dir / "logs").mkdir(exist_ok=True)
        pod_json = pod.dir / "pod.json"
        ctr_json = pod.dir / "container.json"
        pod_json.write_text(json.dumps(self.pod_config(spec, name)))
        ctr_json.write_text(json.dumps(self.container_config(spec)))
        crictl = self.daemon.crictl
        t = TIMEOUTS.pod_start
        try:
            start = time.monotonic()
            pod.pod_id = crictl("runp", "--runtime", spec.runtime.handler, str(pod_json),
                                timeout=t).stdout.strip()
            mark = time.monotonic()
            pod.timings.phases["runp_seconds"] = mark - start
            pod.container_id = crictl("create", pod.pod_id, str(ctr_json), str(pod_json),
                                      timeout=t).stdout.strip()
            now = time.monotonic()
            pod.timings.phases["create_seconds"] = now - mark
            mark = now
            crictl("start", pod.container_id, timeout=t)
            pod.timings.phases["start_seconds"] = time.monotonic() - mark
        except BaseException as exc:
            detail = pod.diagnostics() if pod.pod_id else self.daemon.log_tail(30)
            self.delete_pod(pod)
            if isinstance(exc, ComponentError):
                raise ComponentError(f"{exc}\n{detail}") from None
            raise
        return pod

    def delete_pod(self, pod: NodePod) -> None:
        """Over CRI (with containerd dead, its processes killed: its state goes with the
        run's); then the pod's cgroup goes, as kubelet removes the pod cgroups it made: the
        runtime removes only the sandbox's and containers' cgroups below it, so without
        this every pod left one cgroup per hierarchy (a soak found it)."""
        if pod.pod_id is None or self.daemon is None:
            return
        if self.daemon.alive():
            self._remove_sandbox(pod.pod_id)
        runcgroups.release(self.pod_cgroup(pod.name))
        pod.pod_id = pod.container_id = None

    def pod_cgroup(self, name: str) -> str:
        """The pod's cgroup (CRI's cgroup_parent): its sandbox and containers are below.
        gVisor's shim runs a sandbox and its gofer in the nearest ancestor of the
        container's cgroup named ``pod*`` (kubelet's pod<uid>; shim/v1/runsc
        setPodCgroup), so this one is named so too."""
        return f"{self.cgroup}/pods/pod-{name}"

    def _remove_sandbox(self, pod_id: str) -> None:
        self.daemon.crictl("stopp", pod_id, timeout=TIMEOUTS.pod_delete, check=False)
        self.daemon.crictl("rmp", "-f", pod_id, timeout=TIMEOUTS.pod_delete, check=False)

    def host_pids(self, pod: NodePod) -> list[int]:
        """Shim and sandbox processes of this pod (their command lines name its sandbox id)."""
        if pod.pod_id is None:
            return []
        return sandbox_pids(self.daemon, pod.pod_id)

    def footprint(self) -> Footprint:
        """containerd, the run's cgroup tree (containerd, its shims, the pods), the work
        dir's mounts, and the netns, IPAM and bridge its CNI config names."""
        pid = self.daemon.proc.pid if self.daemon is not None and self.daemon.proc else None
        return Footprint(daemons={"containerd": pid} if pid else {}, cgroups=(self.cgroup,),
                         mount_prefixes=(str(self.workdir),),
                         ipam_dir=str(self.workdir / IPAM_DIR), bridge=bridge_name(self.run_id))

    # -- teardown ------------------------------------------------------------------------

    def stop(self) -> None:
        """Pods removed over CRI while containerd lives; then everything in the run's
        cgroup tree is killed (what a dead containerd left too), mounts made from the
        work dir are unmounted and the tree, the bridge and the work dir removed. Only
        what the run started is stopped: nothing is found by its command line."""
        if self.keep:
            return
        if self.daemon is not None:
            if self.daemon.alive():
                proc = self.daemon.crictl("pods", "-q", "--label",
                                          f"{RUN_LABEL}={self.run_id}", check=False,
                                          timeout=TIMEOUTS.api_call)
                for pod_id in proc.stdout.split():
                    self._remove_sandbox(pod_id)
            self.daemon.stop()
        runcgroups.release(self.cgroup)
        remove_network(self.run_id)
        delete_tree(self.workdir)


def sandbox_pids(daemon: PrivateContainerd, pod_id: str) -> list[int]:
    """Host processes of a sandbox and its containers: shims, runsc's sandbox, gofers and
    waiters name one of these ids on their command lines."""
    ids = [pod_id, *daemon.crictl("ps", "-a", "-q", "--pod", pod_id, check=False,
                                  timeout=TIMEOUTS.api_call).stdout.split()]
    pids = {pid for one in ids for pid, _ in hostproc.processes_mentioning(one)}
    return sorted(pids)




def open_backend(settings: BackendSettings) -> NodeBackend:
    return NodeBackend(settings.runtimes, settings.run_id, settings.image,
                       containerd=settings.options.get("containerd"), keep=settings.keep,
                       progress=settings.progress)


def unavailable() -> str | None:
    """Why the node backend cannot run here (None: it can)."""
    try:
        default_containerd()
    except UserError as exc:
        return str(exc)
    if shutil.which("crictl", path=search_path()) is None:
        return "crictl not found: run `sandcheck provision`"
    return None


def remove_leftovers(workdir: Path) -> list[str]:
    """What a dead node run leaves outside its work dir: every process in its cgroup tree
    (containerd, shims, pods; found with containerd dead and the work dir gone), the tree,
    and its CNI bridge."""
    run_id = run_id_of(workdir)
    done = runcgroups.release(runcgroups.run_cgroup(run_id, NodeBackend.name))
    return done + remove_network(run_id)
