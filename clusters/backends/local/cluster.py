"""The local backend: a real single-node Kubernetes made of the real components.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kubelet (the pinned
builds of clusters.kubernetes_build) run as plain processes on this machine; the node is
the node backend's private containerd (catalog handlers verified, CNI bridge, probe
image imported), which kubelet drives over CRI. Everything listens on 127.0.0.1 only,
on ports picked free at start, with certificates from a CA made for the run.

Everything lives under one work dir (``/var/tmp/sandcheck/local-<run id>``): certs,
kubeconfigs, etcd's data, kubelet's root and cert dirs, every log. Two things kubelet
would do to the host are kept away from it:

* kubelet sets kernel tunables (vm.overcommit_memory, kernel.panic, kernel.panic_on_oops,
  ...) unless they already hold its values, and refuses to start when told not to. It
  runs in a mount namespace of its own in which those /proc/sys files are bind mounts of
  files holding the values it wants, so the host's kernel settings never change. Its root
  dir is a shared bind mount made before it starts, so volume mounts it makes there
  still reach containerd in the host's namespace.
* its pod cgroups (kubepods, QoS classes, pods) live under a per-run cgroup root, so a
  second run or a real kubelet on the host is never disturbed, and stop() removes them.

kubelet refuses 127.0.0.1 as its node IP, so the node reports the host's InternalIP and
the Hostname ``sandcheck-node``; kubelet listens on 127.0.0.1 only, and the API server
reaches it (exec, logs) by that Hostname, which resolves to 127.0.0.1 through an
/etc/hosts bind-mounted in the API server's own mount namespace. The host's /etc/hosts
is not changed.

Kubelet still writes symlinks to /var/log/containers (a fixed path); stop() removes the
ones that point into the work dir.
"""

from __future__ import annotations

import os
import platform
import secrets
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sandcheck.clusters import provision
from sandcheck.clusters.backends.base import TIMEOUTS
from sandcheck.clusters.backends.kube import KubeCluster, KubePod
from sandcheck.clusters.catalog import Runtime
from sandcheck.clusters.errors import ComponentError, UserError
from sandcheck.clusters.host import proc as hostproc
from sandcheck.clusters.host.workdir import WORK_BASE, claim, remove_tree, run_id_of
from sandcheck.clusters.provision.kubernetes import (
    ETCD_VERSION,
    KUBERNETES_COMMANDS,
    KUBERNETES_VERSION,
)

NODE_NAME = "sandcheck-node"
LOOPBACK = "127.0.0.1"
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"
CERT_DAYS = 30
LOG_TAIL = 40
CONTAINER_LOGS_DIR = Path("/var/log/containers")

# What kubelet wants these kernel tunables to be (pkg/kubelet/cm setupKernelTunables).
KUBELET_SYSCTLS = {
    "vm/overcommit_memory": "1",
    "vm/panic_on_oom": "0",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000",
    "kernel/keys/root_maxbytes": "25000000",
}


# --- binaries ------------------------------------------------------------------------------


def find_binaries() -> dict[str, str]:
    """The Kubernetes commands and etcd: the links `sandcheck provision --kubernetes`
    made, else the pinned builds in the cache."""
    bin_dir = provision.cache_dir() / "bin"
    places = {name: [provision.path_dir() / name,
                     bin_dir / f"kubernetes-{KUBERNETES_VERSION}" / name]
              for name in KUBERNETES_COMMANDS}
    places["etcd"] = [provision.path_dir() / "etcd", bin_dir / f"etcd-{ETCD_VERSION}" / "etcd"]
    found, missing = {}, []
    for name, cands in places.items():
        exe = next((c for c in cands if c.is_file() and os.access(c, os.X_OK)), None)
        if exe is None:
            missing.append(name)
        else:
            found[name] = str(exe)
    if missing:
        raise UserError(f"the local backend needs {', '.join(missing)} (Kubernetes "
                        f"{KUBERNETES_VERSION}, etcd {ETCD_VERSION}): run "
                        "`sandcheck provision --kubernetes`")
    for tool in ("openssl", "unshare", "mount"):
        if shutil.which(tool) is None:
            raise UserError(f"the local backend needs {tool} on PATH (apt-get install "
                            f"{'openssl' if tool == 'openssl' else 'util-linux'})")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


# --- certificates --------------------------------------------------------------------------


@dataclass(frozen=True)
class CertRequest:
    """One certificate: subject, SANs and usage."""

    name: str
    """File stem under the pki dir."""
    common_name: str
    organizations: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    server: bool = False
    client: bool = False
    ca: bool = False


def openssl_config(req: CertRequest) -> str:
    """An openssl config whose [dn] is the subject and whose [ext] the extensions (pure)."""
    lines = ["[req]", "distinguished_name = dn", "prompt = no", "", "[dn]"]
    for i, org in enumerate(req.organizations):
        lines.append(f"{i}.O = {org}")
    lines += [f"CN = {req.common_name}", "", "[ext]"]
    if req.ca:
        lines += ["basicConstraints = critical,CA:TRUE",
                  "keyUsage = critical,keyCertSign,cRLSign,digitalSignature",
                  "subjectKeyIdentifier = hash"]
    else:
        usages = [u for u, on in (("serverAuth", req.server), ("clientAuth", req.client)) if on]
        lines += ["basicConstraints = critical,CA:FALSE",
                  "keyUsage = critical,digitalSignature,keyEncipherment"]
        if usages:
            lines.append(f"extendedKeyUsage = {','.join(usages)}")
        lines.append("authorityKeyIdentifier = keyid")
        if req.dns or req.ips:
            lines.append("subjectAltName = @alt")
            lines += ["", "[alt]"]
            lines += [f"DNS.{i + 1} = {d}" for i, d in enumerate(req.dns)]
            lines += [f"IP.{i + 1} = {ip}" for i, ip in enumerate(req.ips)]
    return "\n".join(lines) + "\n"


class Pki:
    """A CA for one run and the certificates signed by it, made with the openssl CLI."""

    def __init__(self, directory: Path, days: int = CERT_DAYS):
        self.dir = Path(directory)
        self.days = days

    def path(self, name: str, kind: str) -> Path:
        return self.dir / f"{name}.{kind}"

    def _openssl(self, *args: str) -> None:
        try:
            hostproc.run(["openssl", *args], timeout=60)
        except subprocess.CalledProcessError as exc:
            raise ComponentError(f"openssl {' '.join(args[:2])} failed: "
                                 f"{(exc.stderr or exc.stdout).strip()}") from None

    def key(self, name: str) -> Path:
        out = self.path(name, "key")
        self._openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                      "-out", str(out))
        out.chmod(0o600)
        return out

    def make_ca(self, common_name: str = "sandcheck-ca") -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        req = CertRequest(name="ca", common_name=common_name, ca=True)
        cnf = self.path("ca", "cnf")
        cnf.write_text(openssl_config(req))
        key = self.key("ca")
        crt = self.path("ca", "crt")
        self._openssl("req", "-x509", "-new", "-config", str(cnf), "-extensions", "ext",
                      "-key", str(key), "-days", str(self.days), "-sha256", "-out", str(crt))
        return crt

    def issue(self, req: CertRequest) -> tuple[Path, Path]:
        """(cert, key) for ``req``, signed by the CA."""
        cnf = self.path(req.name, "cnf")
        cnf.write_text(openssl_config(req))
        key = self.key(req.name)
        csr = self.path(req.name, "csr")
        crt = self.path(req.name, "crt")
        self._openssl("req", "-new", "-config", str(cnf), "-key", str(key), "-out", str(csr))
        self._openssl("x509", "-req", "-in", str(csr), "-CA", str(self.path("ca", "crt")),
                      "-CAkey", str(self.path("ca", "key")), "-set_serial",
                      "0x" + secrets.token_hex(16), "-days", str(self.days), "-sha256",
                      "-extfile", str(cnf), "-extensions", "ext", "-out", str(crt))
        return crt, key

    def service_account_keys(self) -> tuple[Path, Path]:
        key = self.key("sa")
        pub = self.path("sa", "pub")
        self._openssl("pkey", "-in", str(key), "-pubout", "-out", str(pub))
        return key, pub


def kubeconfig(server: str, ca: Path, cert: Path, key: Path, user: str,
               cluster: str = "sandcheck-local") -> dict[str, Any]:
    """A kubeconfig that names files (pure)."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {"server": server,
                                                   "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": {"client-certificate": str(cert),
                                          "client-key": str(key)}}],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": user}}],
        "current-context": cluster,
    }


def kubelet_config(*, port: int, healthz_port: int, ca: Path, cert: Path, key: Path,
                   cgroup_root: str, resolv_conf: Path, pod_logs: Path, plugins: Path,
                   endpoint: str) -> dict[str, Any]:
    """The KubeletConfiguration for this machine (pure). See the module docstring."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": LOOPBACK,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": LOOPBACK,
        "healthzPort": healthz_port,
        "tlsCertFile": str(cert),
        "tlsPrivateKeyFile": str(key),
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(ca)}},
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": endpoint,
        "imageServiceEndpoint": endpoint,
        "cgroupDriver": "cgroupfs",
        "cgroupsPerQOS": True,
        "cgroupRoot": cgroup_root,
        "enforceNodeAllocatable": ["pods"],
        "failSwapOn": False,
        "resolvConf": str(resolv_conf),
        "podPidsLimit": 4096,
        "podLogsDir": str(pod_logs),
        "volumePluginDir": str(plugins),
        # A busy 2-core VM must not evict test pods; no registry, so never GC images.
        "evictionHard": {"memory.available": "64Mi", "nodefs.available": "1%",
                         "nodefs.inodesFree": "1%", "imagefs.available": "1%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": True,
        "registerNode": True,
        # No iptables chains on the host; no oom_score_adj lowering (needs CAP_SYS_RESOURCE).
        "makeIPTablesUtilChains": False,
        "oomScoreAdj": 0,
        "protectKernelDefaults": False,
        "nodeStatusUpdateFrequency": "4s",
        "shutdownGracePeriod": "0s",
    }


def namespace_script(binds: list[tuple[Path, str]], private: str) -> str:
    """sh script run by `unshare --mount`: make ``private`` (recursively) private in the
    new mount namespace, bind each file over its target there, then exec "$@" (pure).
    The host never sees these bind mounts."""
    lines = ["set -e", f"mount --make-rprivate {shlex.quote(private)}"]
    for src, dst in binds:
        lines.append(f"mount --bind {shlex.quote(str(src))} {shlex.quote(dst)}")
    lines.append('exec "$@"')
    return "\n".join(lines)


def in_mount_namespace(binds: list[tuple[Path, str]], private: str, argv: list[str]
                       ) -> list[str]:
    return ["unshare", "--mount", "--propagation", "unchanged", "--", "/bin/sh", "-c",
            namespace_script(binds, private), "sandcheck-ns", *argv]


def hosts_file(original: str, names: tuple[str, ...]) -> str:
    """/etc/hosts with ``names`` on 127.0.0.1 appended (pure)."""
    return original.rstrip("\n") + "\n" + f"{LOOPBACK} {' '.join(names)}\n"


# --- processes -----------------------------------------------------------------------------


@dataclass
class Component:
    """One daemon: argv, log file, process."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(("# " + " ".join(shlex.quote(a) for a in self.argv) + "\n").encode())
            log.flush()
            # A session of its own: Ctrl-C reaches pytest, whose finalizers stop it in order.
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL, env=self.env,
                                         start_new_session=True)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise ComponentError(f"{self.name} exited with {self.proc.returncode}; "
                                 f"log {self.log_path}, tail:\n{self.tail()}")

    def tail(self, lines: int = LOG_TAIL) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(line[:600] for line in text.splitlines()[-lines:])

    def stop(self, grace: float = 10.0) -> None:
        if self.alive():
            hostproc.kill_all([self.proc.pid], grace=grace)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


# --- the cluster ---------------------------------------------------------------------------


class LocalCluster(KubeCluster):
    name = "local"
    kubernetes = True

    def __init__(self, runtimes: list[Runtime], run_id: str, containerd: str | None = None,
                 keep: bool = False):
        super().__init__(runtimes, run_id)
        self.keep = keep
        self.containerd = containerd
        self.workdir = WORK_BASE / f"local-{run_id}"
        self.pki = Pki(self.workdir / "pki")
        self.kubeconfig_path = self.workdir / "admin.kubeconfig"
        self.node = None
        self.components: dict[str, Component] = {}
        self.ports: dict[str, int] = {}
        self.cgroup_root = f"/sandcheck-{run_id}"
        self.bins: dict[str, str] = {}
        self.timings: dict[str, float] = {}
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
        from sandcheck.clusters.backends.node import NodeBackend, default_containerd

        t0 = time.monotonic()
        deadline = t0 + TIMEOUTS.cluster_start
        self.bins = find_binaries()
        claim(self.workdir)
        self._logs_dir_existed = CONTAINER_LOGS_DIR.exists()
        self.node = NodeBackend(self.runtimes, self.run_id,
                                containerd=default_containerd(self.containerd), keep=self.keep)
        self.node.start()
        self.verified = dict(self.node.verified)
        # Runtimes the node lacks get no RuntimeClass; their checks skip, naming why.
        self.missing_runtimes = dict(self.node.missing_runtimes)
        self.runtimes = list(self.node.runtimes)
        self.timings["node_seconds"] = time.monotonic() - t0
        self.ports = {"etcd": free_port(), "etcd_peer": free_port(), "apiserver": free_port(),
                      "kubelet": free_port(), "kubelet_healthz": free_port()}
        mark = time.monotonic()
        self._make_pki()
        self.timings["pki_seconds"] = time.monotonic() - mark
        mark = time.monotonic()
        self._start_etcd(deadline)
        self.timings["etcd_seconds"] = time.monotonic() - mark
        mark = time.monotonic()
        self._start_apiserver(deadline)
        self.timings["apiserver_seconds"] = time.monotonic() - mark
        self.connect()
        self._start_controllers()
        mark = time.monotonic()
        self._start_kubelet()
        self._wait_node_ready(time.monotonic() + TIMEOUTS.node_ready)
        self.timings["node_ready_seconds"] = time.monotonic() - mark
        self.ensure_runtime_classes()
        mark = time.monotonic()
        self.ensure_namespace()  # its default ServiceAccount comes from the controllers
        self.timings["namespace_seconds"] = time.monotonic() - mark
        self.timings["total_seconds"] = time.monotonic() - t0

    def _make_pki(self) -> None:
        pki = self.pki
        pki.make_ca()
        pki.service_account_keys()
        pki.issue(CertRequest("apiserver", "kube-apiserver", server=True,
                              dns=("localhost", "kubernetes", "kubernetes.default",
                                   "kubernetes.default.svc",
                                   "kubernetes.default.svc.cluster.local"),
                              ips=(LOOPBACK, SERVICE_IP)))
        pki.issue(CertRequest("apiserver-kubelet-client", "kube-apiserver-kubelet-client",
                              organizations=("system:masters",), client=True))
        pki.issue(CertRequest("kubelet-serving", NODE_NAME, server=True,
                              dns=(NODE_NAME, "localhost"), ips=(LOOPBACK,)))
        clients = {
            "admin": ("sandcheck-admin", ("system:masters",)),
            "controller-manager": ("system:kube-controller-manager", ()),
            "scheduler": ("system:kube-scheduler", ()),
            "kubelet": (f"system:node:{NODE_NAME}", ("system:nodes",)),
        }
        for name, (cn, orgs) in clients.items():
            crt, key = pki.issue(CertRequest(name, cn, organizations=orgs, client=True))
            path = self.kubeconfig_path if name == "admin" else self.workdir / f"{name}.kubeconfig"
            path.write_text(yaml.safe_dump(kubeconfig(
                f"https://{LOOPBACK}:{self.ports['apiserver']}", pki.path("ca", "crt"), crt,
                key, cn)))
            path.chmod(0o600)

    def _component(self, name: str, argv: list[str], env: dict[str, str] | None = None
                   ) -> Component:
        comp = Component(name, argv, self.workdir / "logs" / f"{name}.log", env=env)
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
        self._wait_http(comp, f"{client}/health", deadline, ssl_context=None,
                        ok=lambda body: '"health":"true"' in body)

    def _start_apiserver(self, deadline: float) -> None:
        pki, p = self.pki, self.ports
        # kubelet refuses a loopback node IP, so the node's addresses are the host's
        # InternalIP and the Hostname sandcheck-node; the API server (alone) resolves that
        # name to 127.0.0.1, where kubelet listens, through an /etc/hosts of its own.
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
        self._wait_http(comp, f"{self.server}/readyz", deadline, ssl_context=ctx,
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

    def _prepare_cgroup_root(self) -> None:
        """mkdir the run's cgroup root in every hierarchy (kubelet insists it exists)."""
        for base in cgroup_hierarchies():
            path = base / self.cgroup_root.lstrip("/")
            path.mkdir(exist_ok=True)
            if (base / "cpuset.cpus").exists():
                for f in ("cpuset.cpus", "cpuset.mems"):
                    (path / f).write_text((base / f).read_text())

    def _start_kubelet(self) -> None:
        pki = self.pki
        root = self.workdir / "kubelet"
        root.mkdir(parents=True, exist_ok=True)
        # A shared mount: what kubelet mounts below it in its own mount namespace
        # propagates to the host's, where containerd and runc look.
        hostproc.run(["mount", "--bind", str(root), str(root)], timeout=30)
        hostproc.run(["mount", "--make-shared", str(root)], timeout=30)
        fake_dir = self.workdir / "kubelet-sysctl"
        fake_dir.mkdir(exist_ok=True)
        fakes: list[tuple[Path, str]] = []
        for key, value in KUBELET_SYSCTLS.items():
            if not Path("/proc/sys", key).exists():
                continue
            fake = fake_dir / key.replace("/", ".")
            fake.write_text(value + "\n")
            fakes.append((fake, f"/proc/sys/{key}"))
        resolv = self.workdir / "resolv.conf"
        resolv.write_text(f"nameserver {LOOPBACK}\noptions ndots:1\n")
        self._prepare_cgroup_root()
        config = self.workdir / "kubelet-config.yaml"
        config.write_text(yaml.safe_dump(kubelet_config(
            port=self.ports["kubelet"], healthz_port=self.ports["kubelet_healthz"],
            ca=pki.path("ca", "crt"), cert=pki.path("kubelet-serving", "crt"),
            key=pki.path("kubelet-serving", "key"), cgroup_root=self.cgroup_root,
            resolv_conf=resolv, pod_logs=self.workdir / "pod-logs",
            plugins=self.workdir / "volume-plugins", endpoint=self.node.daemon.endpoint),
            sort_keys=False))
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join([str(provision.path_dir()), env.get("PATH", "/usr/bin:/bin")])
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
        ]), env=env)

    def _wait_http(self, comp: Component, url: str, deadline: float,
                   ssl_context: ssl.SSLContext | None, ok) -> None:
        last = ""
        while True:
            comp.check()
            try:
                with urllib.request.urlopen(url, timeout=5, context=ssl_context) as resp:
                    body = resp.read().decode(errors="replace")
                    if resp.status == 200 and ok(body):
                        return
                    last = f"{resp.status} {body[:200]}"
            except urllib.error.HTTPError as exc:
                last = f"{exc.code} {exc.read()[:300].decode(errors='replace')}"
            except (OSError, ssl.SSLError) as exc:
                last = str(exc)
            if time.monotonic() > deadline:
                raise ComponentError(f"{comp.name} not ready at {url} within the start "
                                     f"timeout (last answer: {last}); log {comp.log_path}, "
                                     f"tail:\n{comp.tail()}")
            time.sleep(0.2)

    def _wait_node_ready(self, deadline: float) -> None:
        from kubernetes.client.rest import ApiException

        last = "not registered"
        while True:
            for comp in self.components.values():
                comp.check()
            try:
                node = self.core.read_node(NODE_NAME, _request_timeout=10)
                conds = {c.type: c for c in node.status.conditions or []}
                ready = conds.get("Ready")
                if ready is not None and ready.status == "True":
                    return
                if ready is not None:
                    last = f"Ready={ready.status} ({ready.reason}: {ready.message})"
            except ApiException as exc:
                if exc.status != 404:
                    last = f"{exc.status} {exc.reason}"
            if time.monotonic() > deadline:
                raise ComponentError(f"node {NODE_NAME} not Ready within "
                                     f"{TIMEOUTS.node_ready:.0f}s ({last})"
                                     + self._logs_text())
            time.sleep(0.5)

    def reach_hint(self) -> str:
        kubectl = self.bins.get("kubectl", "kubectl")
        return (f"sandcheck: local cluster kept running (--keep-cluster):\n"
                f"  {kubectl} --kubeconfig {self.kubeconfig_path} get nodes,pods -A\n"
                f"  logs: {self.workdir / 'logs'}, containerd log: "
                f"{self.node.daemon.log_path if self.node and self.node.daemon else '?'}\n"
                f"  remove it with `sandcheck cleanup` (everything is under {self.workdir}"
                f" and {self.node.workdir if self.node else ''})")

    # -- evidence -------------------------------------------------------------------------

    def component_logs(self) -> dict[str, str]:
        logs = {}
        if "kubelet" in self.components:
            logs["kubelet"] = self.components["kubelet"].tail()
        if self.node is not None and self.node.daemon is not None:
            logs["containerd"] = self.node.daemon.log_tail(LOG_TAIL)
        return logs

    def environment(self) -> dict[str, Any]:
        env: dict[str, Any] = {"backend": self.name, "kubernetes": self.server_version(),
                               "kubernetes_pinned": KUBERNETES_VERSION,
                               "etcd_pinned": ETCD_VERSION,
                               "start_seconds": {k: round(v, 2) for k, v in self.timings.items()}}
        try:
            info = self.core.read_node(NODE_NAME, _request_timeout=10).status.node_info
            env["node_info"] = {"kubelet": info.kubelet_version,
                                "container_runtime": info.container_runtime_version,
                                "kernel": info.kernel_version}
        except Exception:
            pass
        if self.node is not None:
            node_env = self.node.environment()
            node_env.pop("backend", None)
            env["node"] = node_env
            env["handlers_verified"] = node_env.get("handlers_verified")
        return env

    def inspect_pod(self, pod: KubePod) -> dict[str, Any]:
        """`crictl inspectp`/`inspect` of the pod's sandbox and probe container: nanosecond
        timestamps and the runtime handler, from containerd itself."""
        import json

        daemon = self.node.daemon
        sandboxes = self._sandbox_ids(pod)
        if not sandboxes:
            return {}
        containers = daemon.crictl("ps", "-a", "-q", "--pod", sandboxes[0], check=False,
                                   timeout=30).stdout.split()
        found: dict[str, Any] = {}
        for key, argv in (("sandbox", ["inspectp", sandboxes[0]]),
                          ("container", ["inspect", *containers[:1]])):
            if len(argv) < 2:
                continue
            try:
                found[key] = json.loads(daemon.crictl(*argv, check=False, timeout=30).stdout)
            except json.JSONDecodeError:
                continue
        return found

    def _sandbox_ids(self, pod: KubePod) -> list[str]:
        """CRI sandbox ids of a pod (kubelet names sandboxes after the pod)."""
        return self.node.daemon.crictl("pods", "-q", "--name", pod.name, "--namespace",
                                       pod.namespace, check=False, timeout=30).stdout.split()

    def sandbox_handler(self, pod: KubePod) -> str | None:
        """The runtime handler containerd ran the pod's sandbox with (CRI's own answer)."""
        sandbox = self.inspect_pod(pod).get("sandbox") or {}
        return (sandbox.get("status") or {}).get("runtimeHandler")

    def node_kernel(self, pod: KubePod) -> str | None:
        return platform.release()

    def host_pids(self, pod: KubePod) -> list[int]:
        """Shim and sandbox processes of the pod (their command lines name its sandbox)."""
        if self.node is None or self.node.daemon is None:
            return []
        from sandcheck.clusters.backends.node import sandbox_pids

        pids: set[int] = set()
        for sandbox in self._sandbox_ids(pod):
            pids.update(sandbox_pids(self.node.daemon, sandbox))
        return sorted(pids)

    # -- teardown -------------------------------------------------------------------------

    def stop(self) -> None:
        """Tear everything down, in order; safe to call again and after a failed start."""
        if self.keep:
            if self.components:
                print(self.reach_hint(), file=sys.stderr, flush=True)
            return
        if self._stopped:
            return
        self._stopped = True
        steps = []
        kubelet = self.components.get("kubelet")
        if self.api_client is not None and kubelet is not None and kubelet.alive():
            # Pods go while kubelet runs, so their sandboxes are torn down properly.
            steps.append(("delete namespace", lambda: self.delete_namespace(TIMEOUTS.pod_delete)))
        for name in ("kubelet", "kube-scheduler", "kube-controller-manager",
                     "kube-apiserver", "etcd"):
            comp = self.components.get(name)
            if comp is not None:
                steps.append((f"stop {name}", comp.stop))
        steps.append(("close API client", self._close_client))
        if self.node is not None:
            steps.append(("stop node", self.node.stop))
        steps.append(("kill leftovers", lambda: hostproc.kill_mentioning(self.workdir)))
        steps.append(("remove leftovers", lambda: remove_leftovers(
            self.workdir, remove_logs_dir=not self._logs_dir_existed)))
        steps.append(("remove work dir", lambda: remove_tree(self.workdir)))
        # Every step runs even when one fails (this is also the Ctrl-C path).
        for what, step in steps:
            try:
                step()
            except Exception as exc:
                print(f"sandcheck: local cluster teardown: {what} failed: {exc}",
                      file=sys.stderr, flush=True)

    def _close_client(self) -> None:
        if self.api_client is not None:
            try:
                self.api_client.close()
            finally:
                self.api_client = None


def remove_leftovers(workdir: Path, remove_logs_dir: bool = False) -> list[str]:
    """What a local run leaves outside its work dir once its processes are gone: its pod
    cgroup subtree and kubelet's /var/log/containers links. For `sandcheck cleanup` too."""
    done = []
    if workdir.name.startswith("local-"):
        done += remove_cgroup_root(f"/sandcheck-{run_id_of(workdir)}")
    done += remove_container_log_links(workdir, remove_dir=remove_logs_dir)
    return done


def cgroup_hierarchies() -> list[Path]:
    """Mount points of the cgroup hierarchies (v1 controllers and the v2 mount)."""
    out = []
    for point, fstype, _ in provision._mounts():
        if fstype in ("cgroup", "cgroup2"):
            out.append(Path(point))
    return out


def remove_cgroup_root(cgroup_root: str) -> list[str]:
    """rmdir the run's cgroup subtree in every hierarchy, deepest first."""
    rel = cgroup_root.strip("/")
    removed: list[str] = []
    if not rel.startswith("sandcheck-"):
        return removed
    for base in cgroup_hierarchies():
        top = base / rel
        if not top.is_dir():
            continue
        dirs = sorted((Path(d) for d, _, _ in os.walk(top)), key=lambda p: -len(p.parts))
        for d in dirs:
            for _ in range(20):
                try:
                    d.rmdir()
                    if d == top:
                        removed.append(f"rmdir {top}")
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)
    return removed


def remove_container_log_links(workdir: Path, remove_dir: bool = False) -> list[str]:
    """Kubelet's symlinks in /var/log/containers that point into ``workdir``; the dir
    itself too when ``remove_dir`` (kubelet made it for this run) and it is empty."""
    done: list[str] = []
    if not CONTAINER_LOGS_DIR.is_dir():
        return done
    for link in CONTAINER_LOGS_DIR.iterdir():
        try:
            if link.is_symlink() and os.readlink(link).startswith(str(workdir)):
                link.unlink()
                done.append(f"rm {link}")
        except OSError:
            pass
    if remove_dir:
        try:
            CONTAINER_LOGS_DIR.rmdir()
            done.append(f"rmdir {CONTAINER_LOGS_DIR}")
        except OSError:
            pass
    return done
