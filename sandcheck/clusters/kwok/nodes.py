"""The kwok backend's simulated nodes: their Node objects (pure), made through the API by
a small pool of threads, and the wait until kwok has made every one Ready.

Each node is a copy of the recording node (the local cluster's real kubelet node: its
kubelet, containerd, kernel and OS as node info, so a recorded pod's report matches the
node it is replayed on) with a name, identity and addresses of its own:

* ``kwok-node-0000`` ... (zero-padded, so sorted order is numeric), labelled as kubelet
  labels a node plus ``type=kwok`` (kwok manages these) and an instance type;
* tainted ``kwok.x-k8s.io/node=fake:NoSchedule``, kwok's convention: the scheduler keeps
  every pod that does not pin itself to a simulated node on the real node (a pod pinned
  with ``nodeName`` is not scheduled, so the taint does not stop it);
* its own podCIDR (a /24 of 10.128.0.0/9), so kwok's pod IPs never run out across a fleet,
  and an InternalIP of 198.18.0.0/15 (RFC 2544's benchmarking range, never routed);
* status written at creation (the API server keeps a new node's status, as kubelet's
  registration relies on): capacity, node info, the selected runtimes' handlers
  (``status.runtimeHandlers``) and the server that answers for the node's pods: kwok's, on
  127.0.0.1 (``daemonEndpoints.kubeletEndpoint.Port``). The API server reaches a node by
  its Hostname address (``--kubelet-preferred-address-types=Hostname``), which is therefore
  ``127.0.0.1`` (kubelet's own Hostname address is whatever ``--hostname-override`` says,
  an IP included), and checks kwok's certificate against the run's CA: its SAN is that IP.
"""

from __future__ import annotations

import ipaddress
import json
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sandcheck.catalog import Runtime
from sandcheck.clusters.kwok.config import SIMULATED_LABEL, SIMULATED_SELECTOR
from sandcheck.errors import ComponentError
from sandcheck.timeouts import TIMEOUTS, wait_until

NAME_PREFIX = "kwok-node-"
NAME_DIGITS = 4
MAX_NODES = 32768
"""The /24s of 10.128.0.0/9."""
CREATE_WORKERS = 8
"""Node creations in flight at once (the API client's pool holds ten connections)."""
POD_CIDRS = ipaddress.ip_network("10.128.0.0/9")
NODE_IPS = ipaddress.ip_network("198.18.0.0/15")
INSTANCE_TYPE = "sandcheck-simulated"
CAPACITY = {"cpu": "32", "memory": "256Gi", "pods": "110", "ephemeral-storage": "512Gi"}
TAINT = {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}
HOSTNAME_ADDRESS = "127.0.0.1"
NODE_INFO_KEYS = ("architecture", "containerRuntimeVersion", "kernelVersion",
                  "kubeletVersion", "kubeProxyVersion", "operatingSystem", "osImage")
"""What a simulated node copies of the recording node's ``status.nodeInfo``."""


def node_names(count: int) -> list[str]:
    """``kwok-node-0000``...: at least four digits, more when ``count`` needs them."""
    digits = max(NAME_DIGITS, len(str(max(count - 1, 0))))
    return [f"{NAME_PREFIX}{i:0{digits}d}" for i in range(count)]


def pod_cidr(index: int) -> str:
    """The ``index``-th /24 of POD_CIDRS."""
    return str(ipaddress.ip_network((int(POD_CIDRS.network_address) + (index << 8), 24)))


def node_ip(index: int) -> str:
    return str(NODE_IPS.network_address + index + 1)


def runtime_handlers(runtimes: list[Runtime], template: dict[str, Any]) -> list[dict[str, Any]]:
    """The selected runtimes' handlers, each with the features the recording node reports
    for it (none when its containerd reports no handlers, as 1.7 does not)."""
    known = {h.get("name"): h for h in template.get("runtimeHandlers") or []}
    seen: list[dict[str, Any]] = []
    for rt in runtimes:
        if any(h["name"] == rt.handler for h in seen):
            continue
        features = (known.get(rt.handler) or {}).get("features")
        seen.append({"name": rt.handler, **({"features": features} if features else {})})
    return seen


def node_manifest(name: str, index: int, *, run_id: str, port: int, runtimes: list[Runtime],
                  template: dict[str, Any]) -> dict[str, Any]:
    """The Node object of simulated node ``index`` (pure). ``template`` is the recording
    node's status (a dict as the API returns it)."""
    info = {k: v for k, v in (template.get("nodeInfo") or {}).items() if k in NODE_INFO_KEYS}
    ident = str(uuid.uuid5(uuid.NAMESPACE_URL, f"sandcheck:{run_id}:{name}"))
    info.update(machineID=ident.replace("-", ""), systemUUID=ident, bootID=ident)
    arch = info.get("architecture", "amd64")
    os_name = info.get("operatingSystem", "linux")
    cidr = pod_cidr(index)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": os_name,
                "kubernetes.io/arch": arch,
                "beta.kubernetes.io/os": os_name,
                "beta.kubernetes.io/arch": arch,
                "node.kubernetes.io/instance-type": INSTANCE_TYPE,
                SIMULATED_LABEL[0]: SIMULATED_LABEL[1],
            },
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {"podCIDR": cidr, "podCIDRs": [cidr], "taints": [dict(TAINT)]},
        "status": {
            "capacity": dict(CAPACITY),
            "allocatable": dict(CAPACITY),
            "addresses": [{"type": "InternalIP", "address": node_ip(index)},
                          {"type": "Hostname", "address": HOSTNAME_ADDRESS}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
            "nodeInfo": info,
            "runtimeHandlers": runtime_handlers(runtimes, template),
        },
    }


def register(core, bodies: list[dict[str, Any]]) -> None:
    """Create every node, ``CREATE_WORKERS`` at a time; ComponentError naming the first
    node the API refused."""
    from kubernetes.client.rest import ApiException

    def create(body: dict[str, Any]) -> None:
        try:
            core.create_node(body, _request_timeout=TIMEOUTS.api_call)
        except ApiException as exc:
            raise ComponentError(f"creating simulated node {body['metadata']['name']}: "
                                 f"{exc.status} {exc.reason}: {exc.body}") from None

    with ThreadPoolExecutor(max_workers=CREATE_WORKERS, thread_name_prefix="kwok-node") as pool:
        for future in [pool.submit(create, body) for body in bodies]:
            future.result()


def ready_nodes(core) -> set[str]:
    """The simulated nodes that are Ready, read raw (a thousand nodes parsed into the
    client's models would cost seconds per look)."""
    response = core.list_node(label_selector=SIMULATED_SELECTOR, _preload_content=False,
                              _request_timeout=TIMEOUTS.api_call)
    items = json.loads(response.data)["items"]
    return {n["metadata"]["name"] for n in items
            if any(c.get("type") == "Ready" and c.get("status") == "True"
                   for c in (n.get("status") or {}).get("conditions") or [])}


def wait_ready(core, names: list[str], timeout: float, state: Callable[[], str]) -> None:
    """Until every node of ``names`` is Ready; ``state()`` says why not (kwok's log)."""
    last = [f"none of {len(names)} Ready"]

    def ready() -> bool | None:
        pending = sorted(set(names) - ready_nodes(core))
        if pending:
            last[0] = f"{len(pending)} of {len(names)} not Ready yet (first {pending[0]})"
            return None
        return True

    wait_until(ready, timeout, f"{len(names)} simulated nodes to be Ready",
               interval=TIMEOUTS.slow_poll, state=lambda: last[0] + "\n" + state())
