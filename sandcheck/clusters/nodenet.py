"""The node backend's pod network: a CNI bridge and a /24 of each run's own, portmap for
pods' host ports, and their removal once the run is over (or ``sandcheck cleanup`` finds it).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from sandcheck.errors import UserError
from sandcheck.host import proc as hostproc
from sandcheck.host.hostports import idle_chains_removed
from sandcheck.timeouts import TIMEOUTS

CNI_BIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
IPAM_DIR = "cni-ipam"
"""host-local IPAM's data dir in the run's work dir: a file per leased address."""


def cni_bin_dir() -> str:
    for d in CNI_BIN_DIRS:
        if Path(d, "bridge").exists():
            return d
    raise UserError("CNI plugins not found in /usr/lib/cni or /opt/cni/bin: "
                    "apt-get install containernetworking-plugins (or run `sandcheck provision`)")


def bridge_name(run_id: str) -> str:
    """A per-run bridge (IFNAMSIZ is 16), so parallel runs never share one."""
    return "sc" + hashlib.sha256(run_id.encode()).hexdigest()[:10]


POD_ADDRESSES = 253
"""Pods a run's /24 holds at once: host-local leases every address but the network's, the
bridge's (the gateway) and the broadcast."""


def pod_subnet(run_id: str) -> str:
    """A /24 on this machine's own bridge; pods talk to nothing beyond it."""
    octet = int(hashlib.sha256(run_id.encode()).hexdigest()[:4], 16) % 250 + 1
    return f"10.233.{octet}.0/24"


def write_cni_config(workdir: Path, run_id: str) -> None:
    """The run's CNI network list, in the conf dir the run's containerd reads."""
    conf_dir = workdir / "etc" / "cni"
    conf_dir.mkdir(parents=True, exist_ok=True)
    conflist = {
        "cniVersion": "1.0.0",
        "name": f"sandcheck-{run_id}",
        "plugins": [
            {"type": "bridge", "bridge": bridge_name(run_id), "isGateway": True,
             "ipMasq": False, "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": pod_subnet(run_id)}]],
                      "dataDir": str(workdir / IPAM_DIR)}},
            # A pod's hostPort mappings (kubelet's and critest's), 127.0.0.1 included;
            # a pod without mappings gets no rule. Its chains go at stop().
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
            {"type": "loopback"},
        ],
    }
    (conf_dir / "10-sandcheck.conflist").write_text(json.dumps(conflist, indent=2))


def remove_network(run_id: str) -> list[str]:
    """Delete the run's bridge (CNI leaves it when the last pod goes) and portmap's chains
    once no pod maps a host port; returns what was done."""
    done = []
    name = bridge_name(run_id)
    if Path("/sys/class/net", name).exists():
        hostproc.run(["ip", "link", "delete", name], check=False, timeout=TIMEOUTS.command)
        done.append(f"ip link delete {name}")
    return done + idle_chains_removed()
