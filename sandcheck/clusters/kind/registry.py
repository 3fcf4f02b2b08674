"""``--kind-registry``: the probe image served to the nodes from a local registry, the way
kind documents one (a registry container on the cluster's network, published on the
host's loopback address, and containerd's registry host configuration in every node).

The image is pushed through ``sandcheck push-image``'s code to ``127.0.0.1:<port>``; pods
name ``localhost:<port>/sandcheck/probe:<tag>`` and pull it (IfNotPresent); each node's
``/etc/containerd/certs.d/localhost:<port>/hosts.toml`` sends that name to the registry
container on the ``kind`` network. The ``local-registry-hosting`` ConfigMap in kube-public
tells tools where the registry is (KEP-1755). The registry's access log shows which node
pulled what; it goes into the environment as evidence.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

from sandcheck.clusters.base import RUN_LABEL
from sandcheck.errors import ComponentError
from sandcheck.oci.distribution import CONTAINER_PORT, registry_image
from sandcheck.oci.push import push_archive
from sandcheck.oci.reference import DEFAULT_REPOSITORY, Target
from sandcheck.progress import Progress, quiet
from sandcheck.timeouts import TIMEOUTS, wait_until

KIND_NETWORK = "kind"
CERTS_DIR = "/etc/containerd/certs.d"
CONFIG_PATH_PATCH = {"plugins": {"io.containerd.grpc.v1.cri": {"registry": {
    "config_path": CERTS_DIR}}}}
"""The containerd setting kind's local-registry recipe adds (schema 2 keys)."""
_ACCESS = re.compile(r'^(?P<client>\S+) - .*"(?P<method>[A-Z]+) (?P<path>/v2/\S*) [^"]*" '
                     r'(?P<status>\d{3})')


def hosts_toml(name: str, endpoint: str) -> str:
    """containerd's registry host configuration: pulls of ``name`` go to ``endpoint``."""
    return (f'server = "http://{name}"\n\n'
            f'[host."{endpoint}"]\n  capabilities = ["pull", "resolve"]\n')


def write_hosts(engine: Any, nodes: list[str], host_dir: str, text: str) -> str:
    """``<certs.d>/<host_dir>/hosts.toml`` with ``text`` in every node; says where."""
    where = f"{CERTS_DIR}/{host_dir}"
    for node in nodes:
        engine.docker("exec", "-i", node, "sh", "-c",
                      f"mkdir -p '{where}' && cat > '{where}/hosts.toml'", input=text,
                      timeout=TIMEOUTS.api_call)
    return f"{where}/hosts.toml in {', '.join(nodes)}"


def pulls_by_client(log: str) -> dict[str, int]:
    """Manifest GETs and HEADs answered 200, per client address (pure)."""
    found: Counter[str] = Counter()
    for line in log.splitlines():
        m = _ACCESS.search(line)
        if m and "/manifests/" in m["path"] and m["method"] in ("GET", "HEAD") \
                and m["status"] == "200":
            found[m["client"]] += 1
    return dict(found)


class KindRegistry:
    """The registry container of one run's cluster, in that cluster's engine."""

    def __init__(self, engine: Any, cluster: str, nodes: list[str], run_id: str,
                 progress: Progress = quiet):
        self.engine = engine
        self.name = f"{cluster}-registry"[:63]
        self.nodes = nodes
        self.run_id = run_id
        self.progress = progress
        self.port = 0
        self.address = ""
        self.pushed: str | None = None

    @property
    def host(self) -> str:
        """Where this host pushes (the published port on the loopback address)."""
        return f"127.0.0.1:{self.port}"

    @property
    def endpoint(self) -> str:
        """The URL the nodes pull from, on the kind network."""
        return f"http://{self.address}:{CONTAINER_PORT}"

    @property
    def node_name(self) -> str:
        """The registry's name as nodes and pods use it (kind's convention)."""
        return f"localhost:{self.port}"

    def start(self) -> KindRegistry:
        """Run it and route its name in every node; once (a second call finds it running)."""
        if self.port:
            return self
        archive, ref = registry_image(self.progress)
        self.engine.docker("load", "-i", str(archive), timeout=TIMEOUTS.image_import)
        self.engine.docker("run", "-d", "--name", self.name, "--network", KIND_NETWORK,
                           "--restart", "no", "--label", f"{RUN_LABEL}={self.run_id}",
                           "-p", f"127.0.0.1::{CONTAINER_PORT}", ref,
                           timeout=TIMEOUTS.pod_start)
        published = self.engine.docker("port", self.name, f"{CONTAINER_PORT}/tcp",
                                       timeout=TIMEOUTS.api_call).stdout.split()
        if not published:
            raise ComponentError(f"registry container {self.name} has no published port; "
                                 f"logs:\n{self._logs()}")
        self.port = int(published[0].rsplit(":", 1)[1])
        self.address = self.engine.docker(
            "inspect", "-f", f'{{{{(index .NetworkSettings.Networks "{KIND_NETWORK}")'
            '.IPAddress}}', self.name, timeout=TIMEOUTS.api_call).stdout.strip()
        wait_until(self._serving, TIMEOUTS.daemon_start,
                   f"registry container {self.name} to answer on {self.host}",
                   interval=TIMEOUTS.ready_poll, state=lambda: "logs:\n" + self._logs())
        write_hosts(self.engine, self.nodes, self.node_name,
                    hosts_toml(self.node_name, self.endpoint))
        self.progress(f"kind registry {self.name}: {self.host} on the host, "
                      f"{self.endpoint} on the {KIND_NETWORK} network, {self.node_name} in "
                      f"{len(self.nodes)} nodes")
        return self

    def stop(self) -> None:
        """Nothing: the container lives in the run's private engine and goes with it, after
        the cluster's environment has read its access log."""

    def _serving(self) -> bool | None:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=TIMEOUTS.http_probe):
                return True
        except urllib.error.HTTPError:
            return True  # it answers HTTP: serving
        except OSError:
            return None

    def push(self, archive: Path, tag: str) -> str:
        """Push the image and return the reference pods use."""
        pushed = push_archive(archive, Target(self.host, DEFAULT_REPOSITORY, tag),
                              progress=self.progress)
        self.pushed = f"{self.node_name}/{DEFAULT_REPOSITORY}:{tag}"
        self.progress(f"probe image pushed: {self.pushed} ({pushed.digest})")
        return self.pushed

    def hosting_configmap(self) -> dict[str, Any]:
        """KEP-1755's ConfigMap: where the cluster's local registry is."""
        return {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "local-registry-hosting", "namespace": "kube-public"},
                "data": {"localRegistryHosting.v1":
                         f'host: "{self.node_name}"\nhelp: "sandcheck push-image '
                         f'{self.node_name}"\n'}}

    def _logs(self) -> str:
        proc = self.engine.docker("logs", self.name, check=False, timeout=TIMEOUTS.api_call)
        return (proc.stdout + proc.stderr)[-3000:]

    def environment(self, nodes: list[str]) -> dict[str, Any]:
        """What pulled from the registry, per node: evidence that the nodes used it."""
        proc = self.engine.docker("logs", self.name, check=False, timeout=TIMEOUTS.api_call)
        names = {}
        for node in nodes:
            ip = self.engine.docker("inspect", "-f", f'{{{{(index .NetworkSettings.Networks '
                                    f'"{KIND_NETWORK}").IPAddress}}}}', node, check=False,
                                    timeout=TIMEOUTS.api_call).stdout.strip()
            names[ip] = node
        pulls = pulls_by_client(proc.stdout + proc.stderr)
        return {"container": self.name, "host": self.host, "network_endpoint":
                self.endpoint, "image": self.pushed,
                "manifest_pulls_by_node": {names.get(ip, ip): n for ip, n in pulls.items()}}
