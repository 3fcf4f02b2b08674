"""The kind cluster config a node image of this package needs (pure).

The image preloads only the control plane and pause, and brings its own bridge CNI: so
no kindnet (``disableDefaultCNI``), no kube-proxy (``kubeProxyMode: none``) and no CoreDNS
(kubeadm's addon phase skipped), whose images it does not hold and could not pull. kubelet
keeps its oom_score_adj (lowering it needs CAP_SYS_RESOURCE, which root lacks on some
hosts). Backends add their own patches (containerd runtimes, labels) to this.
"""

from __future__ import annotations

import json
from typing import Any

API_VERSION = "kind.x-k8s.io/v1alpha4"
INIT_SKIP_PHASES = ("preflight", "addon/kube-proxy", "addon/coredns")
"""kind skips preflight (no pulls) and, with kubeProxyMode none, kube-proxy; a kubeadm
patch replaces the whole list."""


def cluster_config(workers: int = 0) -> dict[str, Any]:
    """One control plane and ``workers`` workers."""
    patches = [
        {"apiVersion": "kubeadm.k8s.io/v1beta3", "kind": "InitConfiguration",
         "skipPhases": list(INIT_SKIP_PHASES)},
        {"apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
         "oomScoreAdj": 0},
    ]
    return {
        "kind": "Cluster",
        "apiVersion": API_VERSION,
        "networking": {"disableDefaultCNI": True, "kubeProxyMode": "none"},
        "nodes": [{"role": "control-plane"}] + [{"role": "worker"}] * workers,
        # kind takes each patch as a YAML document; JSON is YAML
        "kubeadmConfigPatches": [json.dumps(p) for p in patches],
    }


def render(config: dict[str, Any]) -> str:
    """The config file's text (JSON, which kind reads as YAML)."""
    return json.dumps(config, indent=2) + "\n"
