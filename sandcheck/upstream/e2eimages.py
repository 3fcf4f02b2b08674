"""The images Kubernetes' e2e specs name, built offline as stand-ins like critest's.

The names are test/utils/image/manifest.go's at the Kubernetes pin (registry.k8s.io's
e2e-test-images, the pause image). agnhost is the real program, built from that release's
test/images/agnhost by ``sandcheck provision --upstream``, in busybox's company (its own
image adds a shell and networking tools the same way). busybox, nginx, httpd and the
nonewprivs image (the probe, setuid root) are the stand-ins critest uses too; nonroot is
busybox with USER 1234, as its Dockerfile has it. busybox and agnhost have bash as /bin/sh
(see ``bash_sh``).

Every one is imported into the node's containerd and also served by the run's loopback
registry, since some specs pull by design (``imagePullPolicy: Always``, "should be able to
pull image"): with every registry host routed there, a pull of a name that is not served
fails as it would upstream, and nothing leaves this machine.
"""

from __future__ import annotations

from pathlib import Path

from sandcheck.errors import UserError
from sandcheck.provision.kubernetes import AGNHOST
from sandcheck.provision.paths import cache_dir
from sandcheck.provision.pins import KUBERNETES_VERSION
from sandcheck.upstream import criimages
from sandcheck.upstream.criimages import E2E, NGINX_CMD, StandIn


def _served(key: str, *names: str, **more) -> StandIn:
    return StandIn(key, names, pulled=False, served=True, **more)


STAND_INS: tuple[StandIn, ...] = (
    _served("e2e-agnhost", E2E + "agnhost:2.56", cmd=("pause",), agnhost=True, bash_sh=True),
    _served("e2e-busybox", E2E + "busybox:1.37.0-1", bash_sh=True),
    _served("e2e-nginx", E2E + "nginx:1.14-4", E2E + "nginx:1.15-4", cmd=NGINX_CMD),
    _served("e2e-httpd", E2E + "httpd:2.4.38-4", E2E + "httpd:2.4.39-4",
            cmd=("httpd-foreground",)),
    _served("e2e-pause", "registry.k8s.io/pause:3.10.1", cmd=("sleep", "infinity")),
    # test/images/nonroot: its base with USER 1234.
    _served("e2e-nonroot", E2E + "nonroot:1.4", user="1234"),
    # critest names the same nonewprivs image: its stand-in prints "Effective uid: N".
    next(s for s in criimages.STAND_INS if s.key == "nonewprivs"),
)


def agnhost() -> dict[str, Path]:
    """The files of agnhost's image at its root: the binary, and the TLS pair its netexec
    and porter serve with (the Dockerfile's ``ADD porter/localhost.crt``), from the
    release's module source."""
    binary = AGNHOST.binaries()["agnhost"]
    porter = (cache_dir() / "go" / "mod" / "k8s.io" / f"kubernetes@{KUBERNETES_VERSION}" /
              "test" / "images" / "agnhost" / "porter")
    files = {"agnhost": binary, "localhost.crt": porter / "localhost.crt",
             "localhost.key": porter / "localhost.key"}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise UserError(f"agnhost is not built ({', '.join(missing)} missing): run `sandcheck "
                        "provision --upstream` (builds it from Kubernetes' test/images/agnhost)")
    return files
