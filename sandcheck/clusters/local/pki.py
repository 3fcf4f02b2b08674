"""The run's certificates and kubeconfigs: a CA made for one run and every certificate the
components present to each other, made with the openssl CLI (no Python crypto package)."""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sandcheck.errors import ComponentError
from sandcheck.host import proc as hostproc
from sandcheck.timeouts import TIMEOUTS

CERT_DAYS = 30
"""Far beyond any run, short enough that a kept cluster's CA is not trusted for long."""


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
            hostproc.run(["openssl", *args], timeout=TIMEOUTS.command)
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


KUBECONFIG_CLIENTS = ("admin", "controller-manager", "scheduler", "kubelet")
"""The client certificates that get a kubeconfig (``<name>.kubeconfig``)."""


def cluster_requests(node_name: str, address: str, service_ip: str) -> list[CertRequest]:
    """Every certificate of a one-node cluster besides the CA (pure): the components listen
    on ``address``; in-cluster clients reach the API at ``service_ip``. The client identities
    are the ones Kubernetes' own authorizers expect: the Node authorizer and NodeRestriction
    admit kubelet only as ``system:node:<node>`` in ``system:nodes``; RBAC's bootstrap roles
    are bound to ``system:kube-controller-manager`` and ``system:kube-scheduler``."""
    return [
        CertRequest("apiserver", "kube-apiserver", server=True,
                    dns=("localhost", "kubernetes", "kubernetes.default",
                         "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"),
                    ips=(address, service_ip)),
        CertRequest("apiserver-kubelet-client", "kube-apiserver-kubelet-client",
                    organizations=("system:masters",), client=True),
        CertRequest("kubelet-serving", node_name, server=True, dns=(node_name, "localhost"),
                    ips=(address,)),
        CertRequest("admin", "sandcheck-admin", organizations=("system:masters",), client=True),
        CertRequest("controller-manager", "system:kube-controller-manager", client=True),
        CertRequest("scheduler", "system:kube-scheduler", client=True),
        CertRequest("kubelet", f"system:node:{node_name}", organizations=("system:nodes",),
                    client=True),
    ]


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


def write_kubeconfig(path: Path, server: str, pki: Pki, req: CertRequest) -> Path:
    """``path``: a kubeconfig for ``req``'s client certificate, readable by root only (it
    names a private key)."""
    path.write_text(yaml.safe_dump(kubeconfig(server, pki.path("ca", "crt"),
                                              pki.path(req.name, "crt"),
                                              pki.path(req.name, "key"), req.common_name)))
    path.chmod(0o600)
    return path
