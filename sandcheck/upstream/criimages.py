"""The images critest names, built offline as one-layer stand-ins.

The names are cri-tools' at the pin (v1.37.0): the default container image
(pkg/framework/util.go), the web servers (pkg/validate/consts.go, consts_linux.go,
multi_container_linux.go, security_context_linux.go) and the image-manager images
(pkg/validate/consts.go; cri-tools' images/build says what each holds). Every stand-in is
Debian's busybox with all its applets as hard links, as busybox's own image has them (a
masked /bin/ls must not mask /bin/sh), plus what a spec looks at: a marker file,
an image USER, an nginx or httpd that serves HTTP 200 and looks like one to ``pidof`` and
``/proc/1/cmdline``, ``ipcs``/``pgrep``/``curl`` (which Debian's busybox lacks; ``ipcs``
is the probe's, ``curl`` fetches through busybox's wget), and for the nonewprivs image the
probe's setuid-root copy printing its effective uid.

Images that containers run are imported into the node's containerd; the ones the image
specs pull by design are pushed to a loopback registry (``pulled``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from sandcheck.errors import ComponentError, UserError
from sandcheck.provision.kindnode.ociarchive import (
    FileEntry,
    file_sha256,
    write_archive,
    write_layer,
)
from sandcheck.provision.paths import unpacked_dir
from sandcheck.provision.pins import BUSYBOX_PACKAGE
from sandcheck.timeouts import TIMEOUTS

E2E = "registry.k8s.io/e2e-test-images/"
STAGING = "gcr.io/k8s-staging-cri-tools/"
BASH = Path("/bin/bash")
_LDD_PATH = re.compile(r"(/\S+) \(0x[0-9a-f]+\)")

PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HTML = "/usr/share/nginx/html"
# busybox's own image's accounts (www-data is what the username specs expect).
PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
"""
GROUP = """root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
wheel:x:10:root
mail:x:8:
www-data:x:33:
operator:x:37:
staff:x:50:
users:x:100:
nogroup:x:65534:
"""
# cri-tools' images/image-predefined-group: default-user (1000) in group-defined-in-image;
# agnhost's image: user-defined-in-image (1000) in the same group.
PREDEFINED_PASSWD = PASSWD + "default-user:x:1000:1000::/home/default-user:/bin/sh\n"
PREDEFINED_GROUP = GROUP + "default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n"
AGNHOST_PASSWD = PASSWD + "user-defined-in-image:x:1000:1000::/home/user:/bin/sh\n"
AGNHOST_GROUP = (GROUP + "user-defined-in-image:x:1000:\n"
                 "group-defined-in-image:x:50000:user-defined-in-image\n")

# nginx rewrites its argv to "nginx: master process ..." and writes its pid file; the PID
# specs look for both (pidof nginx, /proc/1/cmdline). A script's comm is its file name, and
# re-running itself with that title as its first argument puts it into the cmdline.
NGINX = """#!/bin/sh
# Stand-in for nginx: busybox httpd on ${NGINX_PORT:-80}, this shell as its master process.
master="nginx: master process"
[ "$1" = "$master" ] || exec /usr/sbin/nginx "$master" "$@"
mkdir -p /var/run && echo $$ > /var/run/nginx.pid
httpd -f -p "${NGINX_PORT:-80}" -h %(html)s &
trap 'kill $!; exit 0' TERM INT
wait
""".replace("%(html)s", HTML)
HTTPD = f"""#!/bin/sh
# Stand-in for Apache httpd (its log names httpd): busybox httpd on port 80.
echo "httpd: serving {HTML} on port 80"
exec httpd -f -p 80 -h {HTML}
"""
# ipcs -m, which Debian's busybox leaves out: the probe lists the segments through
# shmctl as busybox's ipcs does (gVisor has no /proc/sysvipc).
IPCS = """#!/bin/sh
exec /usr/local/bin/probe ipcs
"""
CURL = """#!/bin/sh
# Stand-in for curl URL (busybox has wget, not curl): the body on stdout.
for url; do :; done
exec wget -q -O - "$url"
"""
PGREP = """#!/bin/sh
# Stand-in for pgrep NAME (Debian's busybox has none): pidof's exact match.
pidof "$@"
exit 0
"""
NGINX_CMD = ("nginx", "-g", "daemon off;")
INDEX = b"<html><body><h1>Welcome to nginx!</h1></body></html>\n"


@dataclass(frozen=True)
class StandIn:
    """One image: the names it is known by and what it holds beyond busybox."""

    key: str
    names: tuple[str, ...]
    pulled: bool
    """True: an image spec pulls it by design (served by the registry); else imported."""
    served: bool = False
    """Imported and also served by the registry: specs run it and some pull it too."""
    marker: str = ""
    """A file of that name at / (cri-tools' image-test adds ``ADD ${TEST} ${TEST}``)."""
    user: str = ""
    cmd: tuple[str, ...] = ("sh",)
    env: tuple[str, ...] = ()
    predefined_group: bool = False
    setuid_probe: bool = False
    """/usr/local/bin/nnp: the probe, setuid root (Kubernetes' nonewprivs image's nnp)."""
    bash_sh: bool = False
    """/bin/sh is this host's bash (in POSIX mode as sh), not busybox's ash: Debian 12's
    busybox 1.35 drops environment variables whose names are not shell identifiers
    (``data-1``), which the e2e image's busybox 1.37 passes on (Kubernetes' envFrom specs)."""
    agnhost: bool = False
    """/agnhost (and its /agnhost-2 link) as the entrypoint, with the files and accounts of
    agnhost's image (test/images/agnhost/Dockerfile): Kubernetes' e2e test program."""


def _user(key: str, user: str) -> StandIn:
    return StandIn(key, (STAGING + key,), pulled=True, user=user)


STAND_INS: tuple[StandIn, ...] = (
    # critest's default image, pulled by its NRI specs.
    StandIn("busybox", (E2E + "busybox:1.29-2",), pulled=False, served=True),
    StandIn("nginx", (E2E + "nginx:1.14-2",), pulled=False,
            cmd=NGINX_CMD),
    StandIn("httpd", (E2E + "httpd:2.4.39-4",), pulled=False, cmd=("httpd-foreground",)),
    StandIn("nonewprivs", (E2E + "nonewprivs:1.3",), pulled=False,
            cmd=("/usr/local/bin/nnp", "euid"), setuid_probe=True),
    StandIn("hostnet-nginx", (STAGING + "hostnet-nginx-amd64",), pulled=False,
            cmd=NGINX_CMD, env=("NGINX_PORT=12003",)),
    StandIn("test-image-latest", (STAGING + "test-image-latest",), pulled=True,
            marker="test-image-latest"),
    StandIn("test-image-tag", (STAGING + "test-image-tag:test", STAGING + "test-image-tag:all"),
            pulled=True, marker="test-image-tag"),
    *(StandIn(f"test-image-{n}", (f"{STAGING}test-image-{n}:latest",), pulled=True,
              marker=f"test-image-{n}") for n in (1, 2, 3)),
    StandIn("test-image-tags", tuple(f"{STAGING}test-image-tags:{n}" for n in (1, 2, 3)),
            pulled=True, marker="same-image"),
    _user("test-image-user-uid", "1002"),
    _user("test-image-user-username", "www-data"),
    _user("test-image-user-uid-group", "1003:1004"),
    _user("test-image-user-username-group", "www-data:1004"),
    StandIn("test-image-predefined-group", (STAGING + "test-image-predefined-group",),
            pulled=True, user="1000", predefined_group=True),
    StandIn("pause", ("registry.k8s.io/pause:3.9", "k8s.gcr.io/pause:3.9"), pulled=True,
            cmd=("sleep", "infinity")),
)
"""``test-image-digest`` is left out: its spec pulls by the digest of the manifest
cri-tools pushed, which no image built here can have (the spec is skipped offline)."""


def split_reference(name: str) -> tuple[str, str, str]:
    """``host/repository[:tag]`` -> (host, repository, tag), ``latest`` when untagged:
    where a name's pull goes (a registry host configuration keeps the repository)."""
    host, _, rest = name.partition("/")
    repository, tag = rest, "latest"
    if ":" in rest.rsplit("/", 1)[-1]:
        repository, _, tag = rest.rpartition(":")
    return host, repository, tag


def full_name(name: str) -> str:
    """What CRI lists for ``name``: with ``:latest`` when untagged."""
    host, repository, tag = split_reference(name)
    return f"{host}/{repository}:{tag}"


def busybox() -> Path:
    exe = unpacked_dir(BUSYBOX_PACKAGE) / "bin" / "busybox"
    if not exe.is_file():
        raise UserError(f"{exe} is missing: run `sandcheck provision --upstream` (it unpacks "
                        f"Debian's {BUSYBOX_PACKAGE} package for critest's images)")
    return exe


def shared_libraries(binary: Path) -> list[Path]:
    """The libraries and loader ``binary`` links, as ldd finds them on this host."""
    proc = subprocess.run(["ldd", str(binary)], capture_output=True, text=True,
                          timeout=TIMEOUTS.command)
    if "not a dynamic executable" in proc.stdout + proc.stderr:
        return []
    if proc.returncode != 0:
        raise ComponentError(f"ldd {binary} failed: {proc.stderr.strip()}")
    return [Path(m) for m in _LDD_PATH.findall(proc.stdout)]


def busybox_applets(busybox: Path) -> list[str]:
    proc = subprocess.run([str(busybox), "--list"], capture_output=True, text=True,
                          timeout=TIMEOUTS.command)
    if proc.returncode != 0:
        raise ComponentError(f"{busybox} --list failed: {proc.stderr.strip()}")
    return sorted(set(proc.stdout.split()) - {"busybox"})


def _accounts(stand_in: StandIn) -> tuple[str, str]:
    if stand_in.agnhost:
        return AGNHOST_PASSWD, AGNHOST_GROUP
    if stand_in.predefined_group:
        return PREDEFINED_PASSWD, PREDEFINED_GROUP
    return PASSWD, GROUP


def _files(stand_in: StandIn, busybox: Path, probe: Path, applets: Iterable[str],
           libraries: Iterable[Path], agnhost: Mapping[str, Path] | None) -> list[FileEntry]:
    passwd, group = _accounts(stand_in)
    files = [
        FileEntry("bin/busybox", 0o755, source=busybox),
        *(FileEntry(str(lib).lstrip("/"), 0o755, source=lib.resolve()) for lib in libraries),
        *(FileEntry(f"bin/{a}", 0o755, hardlink="bin/busybox") for a in applets),
        FileEntry("etc/passwd", data=passwd.encode()),
        FileEntry("etc/group", data=group.encode()),
        FileEntry("usr/local/bin/probe", 0o755, source=probe),
        FileEntry("usr/bin/ipcs", 0o755, data=IPCS.encode()),
        FileEntry("usr/bin/pgrep", 0o755, data=PGREP.encode()),
        FileEntry("usr/bin/curl", 0o755, data=CURL.encode()),
        FileEntry("usr/sbin/nginx", 0o755, data=NGINX.encode()),
        FileEntry("usr/local/bin/httpd-foreground", 0o755, data=HTTPD.encode()),
        FileEntry(f"{HTML.lstrip('/')}/index.html", data=INDEX),
    ]
    if stand_in.marker:
        files.append(FileEntry(stand_in.marker, data=b""))
    if stand_in.setuid_probe:
        files.append(FileEntry("usr/local/bin/nnp", 0o4755, source=probe))
    if stand_in.bash_sh:
        files.append(FileEntry("bin/sh", 0o755, source=BASH))
    if stand_in.agnhost:
        if agnhost is None:
            raise UserError(f"{stand_in.names[0]} needs agnhost: run `sandcheck provision "
                            "--upstream` (builds it from Kubernetes' test/images/agnhost)")
        files += [FileEntry(name, 0o755 if name == "agnhost" else 0o644, source=path)
                  for name, path in sorted(agnhost.items())]
        files.append(FileEntry("agnhost-2", 0o755, hardlink="agnhost"))
    return files


DIRS = {d: 0o755 for d in ("bin", "dev", "etc", "proc", "sys", "usr", "usr/bin", "usr/sbin",
                           "usr/local", "usr/local/bin", "usr/share", "usr/share/nginx", "var",
                           "var/run", "var/www", "home", HTML.lstrip("/"))}
DIRS.update({"root": 0o700, "tmp": 0o1777})


def _dirs(libraries: Iterable[Path]) -> dict[str, int]:
    """DIRS and every directory the libraries go in."""
    dirs = dict(DIRS)
    for lib in libraries:
        for parent in reversed(lib.parents[:-1]):
            dirs.setdefault(str(parent).lstrip("/"), 0o755)
    return dirs


def _recipe(config: dict, names: Iterable[str], files: Iterable[FileEntry],
            dirs: dict[str, int]) -> str:
    """What an archive is made of, content included: its cache key."""
    def content(f: FileEntry) -> str:
        return file_sha256(f.source) if f.source is not None else \
            hashlib.sha256(f.data).hexdigest()

    entries = [[f.path, f.mode, f.hardlink or content(f)] for f in files]
    text = json.dumps([config, list(names), entries, sorted(dirs.items())], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def build(stand_in: StandIn, busybox: Path, probe: Path, cache: Path,
          agnhost: Mapping[str, Path] | None = None) -> Path:
    """The stand-in's archive, cached by everything it is made of."""
    libraries = shared_libraries(busybox)
    applets = busybox_applets(busybox)
    if stand_in.bash_sh:
        libraries = sorted({*libraries, *shared_libraries(BASH)})
        applets = [a for a in applets if a != "sh"]
    files = _files(stand_in, busybox, probe, applets, libraries, agnhost)
    dirs = _dirs(libraries)
    if stand_in.agnhost:
        dirs["uploads"] = 0o755
    config = {"Cmd": list(stand_in.cmd), "Env": [PATH, *stand_in.env], "WorkingDir": "/",
              **({"User": stand_in.user} if stand_in.user else {}),
              **({"Entrypoint": ["/agnhost"]} if stand_in.agnhost else {})}
    key = _recipe(config, stand_in.names, files, dirs)
    archive = cache / f"{stand_in.key}-{key[:12]}.tar"
    if archive.is_file():
        return archive
    cache.mkdir(parents=True, exist_ok=True)
    layer = cache / f".{stand_in.key}.layer.{os.getpid()}"
    try:
        write_layer(layer, files, dirs)
        write_archive(archive, layer, config, [full_name(n) for n in stand_in.names],
                      f"sandcheck stand-in for {stand_in.names[0]}")
    finally:
        layer.unlink(missing_ok=True)
    return archive


def build_all(busybox: Path, probe: Path, cache: Path, stand_ins: Iterable[StandIn] = STAND_INS,
              agnhost: Mapping[str, Path] | None = None) -> dict[StandIn, Path]:
    return {s: build(s, busybox, probe, cache, agnhost) for s in stand_ins}
