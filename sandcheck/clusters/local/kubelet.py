"""How kubelet (and the API server) run here without changing the host.

* kubelet sets kernel tunables (vm.overcommit_memory, kernel.panic, kernel.panic_on_oops,
  ...) unless they already hold its values, and refuses to start when told not to. It runs
  in a mount namespace of its own in which those /proc/sys files are bind mounts of files
  holding the values it wants, so the host's kernel settings never change.
* its pod cgroups (kubepods, QoS classes, pods) live under a per-run cgroup root, so a
  second run or a real kubelet on the host is never disturbed.
* kubelet refuses 127.0.0.1 as its node IP, so the node reports the host's InternalIP and
  the Hostname NODE_NAME; kubelet listens on 127.0.0.1 only, and the API server reaches it
  by that Hostname through an /etc/hosts bind-mounted in its own mount namespace.
* kubelet keeps its generic PLEG (a one-second relist; not configurable). After a pod
  worker's SyncPod it waits for a PLEG cache entry newer than the sync's end
  (pkg/kubelet/pod_workers.go: GetNewerThan(lastSyncTime)), so a pod shows Running at
  the first relist after its container started: up to a second later, whatever the
  runtime. The EventedPLEG gate makes that worse with containerd 1.7.35 (which does
  implement GetContainerEvents): the cache entries it writes carry the event's creation
  time, earlier than the sync's end, so the worker waits for the 5-second global cache
  refresh (measured: every pod Running 5.0-5.2 s after creation instead of about 1 s).
  Start figures therefore time the runtime by containerd's own clock (see
  backends/starttimes.py), and report the API's Running beside them.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from sandcheck.clusters.nodenet import POD_ADDRESSES
from sandcheck.errors import UserError

NODE_NAME = "sandcheck-node"
LOOPBACK = "127.0.0.1"

KUBELET_SYSCTLS = {
    "vm/overcommit_memory": "1",
    "vm/panic_on_oom": "0",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000",
    "kernel/keys/root_maxbytes": "25000000",
}
"""What kubelet wants these kernel tunables to be (pkg/kubelet/cm setupKernelTunables)."""


DEFAULT_MAX_PODS = 250
"""kubelet's maxPods here (its own default is 110): room for a density benchmark's steps,
below the POD_ADDRESSES of the node's /24 pod network."""


def max_pods_checked(value: int | None) -> int:
    """``--max-pods`` as kubelet's maxPods; UserError outside 1..POD_ADDRESSES."""
    if value is None:
        return DEFAULT_MAX_PODS
    if not 1 <= value <= POD_ADDRESSES:
        raise UserError(f"--max-pods {value}: the local node's pod network is a /24 with "
                        f"{POD_ADDRESSES} addresses for pods: give 1 to {POD_ADDRESSES} "
                        f"(default {DEFAULT_MAX_PODS})")
    return value


def cgroup_root(run_id: str) -> str:
    """The run's cgroup root (kubelet's --cgroup-root), the same in every hierarchy."""
    return f"/sandcheck-{run_id}"


def kubelet_config(*, port: int, healthz_port: int, ca: Path, cert: Path, key: Path,
                   cgroup_root: str, resolv_conf: Path, pod_logs: Path, plugins: Path,
                   endpoint: str, max_pods: int = DEFAULT_MAX_PODS) -> dict[str, Any]:
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
        "maxPods": max_pods,
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


def sysctl_binds(fake_dir: Path, proc_sys: Path = Path("/proc/sys")) -> list[tuple[Path, str]]:
    """Write a file holding kubelet's value for each of KUBELET_SYSCTLS this kernel has,
    into ``fake_dir``; (file, /proc/sys path it is to cover) for the namespace script."""
    fake_dir.mkdir(parents=True, exist_ok=True)
    binds = []
    for key, value in KUBELET_SYSCTLS.items():
        target = proc_sys / key
        if not target.exists():
            continue
        fake = fake_dir / key.replace("/", ".")
        fake.write_text(value + "\n")
        binds.append((fake, str(target)))
    return binds


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
    """``argv`` run in a new mount namespace with ``binds`` in place (see namespace_script)."""
    return ["unshare", "--mount", "--propagation", "unchanged", "--", "/bin/sh", "-c",
            namespace_script(binds, private), "sandcheck-ns", *argv]


def hosts_file(original: str, names: tuple[str, ...]) -> str:
    """/etc/hosts with ``names`` on 127.0.0.1 appended (pure)."""
    return original.rstrip("\n") + "\n" + f"{LOOPBACK} {' '.join(names)}\n"
