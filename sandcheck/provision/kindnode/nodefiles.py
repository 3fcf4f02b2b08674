"""What sandcheck adds to kind's base files in its node image, and why (pure: text and
transformations, no I/O).

kind's base image gets its containerd, CNI plugins and default CNI from images pulled at
build time; here they come from sandcheck's builds and Debian packages. Three things keep
a node from changing this host: a privileged node's /proc/sys is the host kernel's, so
systemd's boot-time raise of fs.file-max/fs.nr_open and kubelet's kernel tunables are
written into files bind-mounted over those /proc/sys entries in the node's own mount
namespace (``INIT``); systemd-sysctl, which would apply Debian's global settings
(kernel.pid_max), is masked and only kind's per-network-namespace settings are applied
(``NETNS_SYSCTL_UNIT``); and containerd never lowers an oom_score_adj below its own
(``restrict_oom_score_adj``), which root without CAP_SYS_RESOURCE cannot do.
"""

from __future__ import annotations

import json
from typing import Any

import tomlkit

INIT = """\
#!/bin/sh
# PID 1 of a sandcheck kind node: kind's entrypoint execs this, this execs systemd.
# The node's /proc/sys is the host kernel's. systemd raises fs.file-max and fs.nr_open at
# boot, kubelet sets its kernel tunables (pkg/kubelet/cm setupKernelTunables): each such
# entry is covered, in this container's mount namespace only, by a file holding the value
# they want (or the current one), so their writes never reach the host.
set -e
dir=/kind/sysctl
mkdir -p "$dir"
shield() {
  [ -e "/proc/sys/$1" ] || return 0
  file="$dir/$(echo "$1" | tr / .)"
  if [ -n "${2:-}" ]; then echo "$2" >"$file"; else cat "/proc/sys/$1" >"$file"; fi
  mount --bind "$file" "/proc/sys/$1"
}
shield fs/file-max
shield fs/nr_open
shield vm/overcommit_memory 1
shield vm/panic_on_oom 0
shield kernel/panic 10
shield kernel/panic_on_oops 1
shield kernel/keys/root_maxkeys 1000000
shield kernel/keys/root_maxbytes 25000000
exec /lib/systemd/systemd "$@"
"""

NETNS_SYSCTL_UNIT_NAME = "sandcheck-netns-sysctl.service"
NETNS_SYSCTL_UNIT = """\
[Unit]
Description=kind's network settings (this node's network namespace only)
DefaultDependencies=no
Before=containerd.service kubelet.service

[Service]
Type=oneshot
ExecStart=/sbin/sysctl -q -p /etc/sysctl.d/10-network-magic.conf
ExecStart=/sbin/sysctl -q -p /etc/sysctl.d/10-network-security.conf

[Install]
WantedBy=multi-user.target
"""
"""systemd-sysctl is masked: it would also apply Debian's global settings."""

CNI_TEMPLATE_PATH = "/etc/containerd/sandcheck-cni.template"
CNI_TEMPLATE = """\
{
  "cniVersion": "0.4.0",
  "name": "sandcheck-bridge",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [
          {{- range $i, $range := .PodCIDRRanges}}{{if $i}},{{end}}
          [{"subnet": "{{$range}}"}]{{end}}
        ],
        "routes": [
          {{- range $i, $route := .Routes}}{{if $i}},{{end}}
          {"dst": "{{$route}}"}{{end}}
        ]
      }
    }
  ]
}
"""
"""containerd's CRI writes this out once kubelet passes the node its pod CIDR, so each node
bridges its own range; pods reach other nodes' pods only through the API server (exec)."""

DEFAULT_CNI_MANIFEST = """\
# kind applies this file unless networking.disableDefaultCNI is set. Pod networking of
# this node image is the static bridge containerd writes from
# /etc/containerd/sandcheck-cni.template, so there is nothing to install.
apiVersion: v1
kind: ConfigMap
metadata:
  name: sandcheck-node-network
  namespace: kube-system
data:
  cni: bridge from the node's pod CIDR, no cross-node routes
"""

MASKED_UNITS = ("systemd-binfmt.service", "systemd-sysctl.service")
"""binfmt_misc registrations (kind masks it) and kernel settings are global."""
ENABLED_UNITS = ("kubelet.service", "containerd.service", "undo-mount-hacks.service",
                 NETNS_SYSCTL_UNIT_NAME)
CRI_BASE_HOOK = "/kind/bin/mount-product-files.sh"


def cri_base_spec(default_spec: dict[str, Any]) -> dict[str, Any]:
    """kind's /etc/containerd/cri-base.json from ``ctr oci spec``: its product-file hook
    added to createContainer hooks, the default rlimits dropped."""
    spec = json.loads(json.dumps(default_spec))
    hooks = spec.setdefault("hooks", {}).setdefault("createContainer", [])
    hooks.append({"path": CRI_BASE_HOOK})
    spec.get("process", {}).pop("rlimits", None)
    return spec


def containerd_config(kind_config: str) -> str:
    """kind's containerd config (schema 2) with sandcheck's two settings: the CNI template
    and restrict_oom_score_adj."""
    doc = tomlkit.parse(kind_config)
    cri = doc["plugins"]["io.containerd.grpc.v1.cri"]
    cri["restrict_oom_score_adj"] = True
    cni = cri.setdefault("cni", tomlkit.table())
    cni["conf_template"] = CNI_TEMPLATE_PATH
    return tomlkit.dumps(doc)


def content_identity() -> list[str]:
    """Every text above, for the node image's cache stamp: editing one rebuilds the image."""
    return [INIT, NETNS_SYSCTL_UNIT, CNI_TEMPLATE, DEFAULT_CNI_MANIFEST, *MASKED_UNITS,
            *ENABLED_UNITS, CRI_BASE_HOOK]
