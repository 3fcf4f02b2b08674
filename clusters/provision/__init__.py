"""Host provisioning: the runtimes and tools a run needs, built or installed once.

Every step is idempotent and cheap when already done: Debian packages are only
installed when missing, Go tools are built once per pinned version into the
sandcheck cache and reused from a stamp file afterwards. Nothing is written to
/usr/local/bin unless asked: binaries are linked into a directory of the cache
that sandcheck puts first on PATH of the processes it starts.

The one host change a run may need (moving a cgroup controller off the cgroup2
mount of a hybrid host so that crun starts) is its own explicit step,
``prepare_cgroups_for_crun``, and says what it changed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandcheck.clusters.errors import ComponentError, UserError

# --- pinned tools: the one place their versions live -------------------------------------


@dataclass(frozen=True)
class SourcePatch:
    """A one-line change applied to a pinned module's source before building it."""

    path: str
    """File inside the module."""
    old: str
    """Text that must occur exactly once."""
    new: str
    why: str


@dataclass(frozen=True)
class GoTool:
    """Go programs of one pinned module, built by ``go_build`` (see there)."""

    name: str
    module: str
    version: str
    packages: Mapping[str, str]
    """Name the binary is linked as -> Go package path."""
    tags: tuple[str, ...] = ()
    """Go build tags (e.g. to leave out cgo-only drivers)."""
    version_vars: tuple[str, ...] = ()
    """Package variables set to ``version`` at link time (what ``--version`` prints)."""
    from_source: bool = False
    """Build inside a copy of the module (go.mod has directives ``go install`` refuses)."""
    patches: tuple[SourcePatch, ...] = ()


GVISOR = GoTool(
    name="gvisor",
    module="gvisor.dev/gvisor",
    version="v0.0.0-20260905035102-160fafc42237",
    packages={
        "runsc": "gvisor.dev/gvisor/runsc",
        "containerd-shim-runsc-v1": "gvisor.dev/gvisor/shim",
    },
    version_vars=("gvisor.dev/gvisor/runsc/version.version",),
)

# The gVisor shim lowers its own oom_score_adj to -999 on start and fails the start when
# that is refused. Lowering it needs CAP_SYS_RESOURCE, which root lacks on some VMs and
# in some CI containers ("failed to set OOM Score on shim: ... permission denied").
# On such hosts the shim is built with that one write made best-effort; nothing else
# changes (runsc itself is the unpatched build above).
GVISOR_SHIM_OOM_TOLERANT = GoTool(
    name="gvisor-shim-oom-tolerant",
    module=GVISOR.module,
    version=GVISOR.version,
    packages={"containerd-shim-runsc-v1": "gvisor.dev/gvisor/shim"},
    patches=(
        SourcePatch(
            path="pkg/shim/v1/manager.go",
            old="oomScoreMax); err != nil {",
            new="oomScoreMax); err != nil && !os.IsPermission(err) {",
            why="tolerate EACCES when lowering the shim's oom_score_adj without CAP_SYS_RESOURCE",
        ),
    ),
)

CRI_TOOLS = GoTool(
    name="cri-tools",
    module="sigs.k8s.io/cri-tools",
    version="v1.37.0",
    packages={"crictl": "sigs.k8s.io/cri-tools/cmd/crictl"},
    version_vars=("sigs.k8s.io/cri-tools/pkg/version.Version",),
)

# containerd 2.2 still supports cgroup v1 hosts (deprecated in 2.2, kept until 2029).
# Built with CGO_ENABLED=0: the btrfs snapshotter is cgo-only and left out by tag.
_CD2 = "github.com/containerd/containerd/v2"
CONTAINERD2 = GoTool(
    name="containerd",
    module=_CD2,
    version="v2.2.9",
    packages={
        "containerd": f"{_CD2}/cmd/containerd",
        "containerd-shim-runc-v2": f"{_CD2}/cmd/containerd-shim-runc-v2",
        "ctr": f"{_CD2}/cmd/ctr",
    },
    tags=("no_btrfs",),
    version_vars=(f"{_CD2}/version.Version",),
)

# containerd 1.7 drives every runtime here: it speaks the gVisor shim's v2 bootstrap
# protocol (1.6 does not) and writes ociVersion 1.1.0 specs that Debian's crun 1.8
# accepts (2.x writes 1.3.0, which crun 1.8 rejects). Its go.mod has exclude
# directives, so it is built from a copy of the module rather than `go install`.
CONTAINERD17 = GoTool(
    name="containerd",
    module="github.com/containerd/containerd",
    version="v1.7.35",
    packages={
        "containerd": "github.com/containerd/containerd/cmd/containerd",
        "containerd-shim-runc-v2": "github.com/containerd/containerd/cmd/containerd-shim-runc-v2",
        "ctr": "github.com/containerd/containerd/cmd/ctr",
    },
    tags=("no_btrfs",),
    version_vars=("github.com/containerd/containerd/version.Version",),
    from_source=True,
)

# Debian packages per runtime (the apt-installable part of a runtime).
APT_PACKAGES: dict[str, tuple[str, ...]] = {
    # containerd 1.6 for `verify`; CNI plugins for pod networking; gcc, libc6-dev and
    # busybox-static for the probe image; iproute2 for bridges; openssl for cluster certs.
    "base": ("containerd", "containernetworking-plugins", "iptables", "busybox-static",
             "gcc", "libc6-dev", "iproute2", "openssl"),
    "runc": ("runc",),
    "crun": ("crun",),
    "runsc": (),
}

KATA_UNAVAILABLE = (
    "Kata Containers is not packaged for Debian 12 and its release artifacts are not on a "
    "package registry: install kata-deploy or the static tarball into /opt/kata by hand"
)

PROVISIONABLE = ("runc", "crun", "runsc")

CAP_SYS_RESOURCE = 24

GO_MIN = (1, 22)
GO_FALLBACKS = ("/usr/local/go/bin/go", "/usr/lib/go/bin/go")
GO_BUILD_TIMEOUT = 3600.0
APT_TIMEOUT = 1800.0


# --- small helpers -------------------------------------------------------------------------


def status(msg: str) -> None:
    """One short progress line on stderr."""
    print(f"provision: {msg}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    """``$SANDCHECK_CACHE`` or ``~/.cache/sandcheck``."""
    env = os.environ.get("SANDCHECK_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sandcheck"


def path_dir() -> Path:
    """Links to the built tools; put first on PATH of the processes sandcheck starts."""
    return cache_dir() / "path"


def containerd2_path_dir() -> Path:
    """containerd 2.x and its runc shim: first on PATH only for a containerd 2.x daemon, so a
    containerd 1.x keeps using the shim from its own package."""
    return cache_dir() / "path-containerd2"


def containerd17_path_dir() -> Path:
    """containerd 1.7 and its runc shim, first on PATH only for that daemon."""
    return cache_dir() / "path-containerd17"


def _run(
    argv: Sequence[str],
    timeout: float,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(env) if env is not None else None,
            cwd=cwd,
        )
    except FileNotFoundError as exc:
        raise UserError(f"{argv[0]} not found: {exc}") from None
    except subprocess.TimeoutExpired:
        raise ComponentError(f"`{' '.join(argv)}` did not finish within {timeout:.0f}s") from None
    if check and proc.returncode != 0:
        raise ComponentError(
            f"`{' '.join(argv)}` failed ({proc.returncode}):\n{_tail(proc.stderr or proc.stdout)}"
        )
    return proc


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive flock, so concurrent runs build or install once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def has_capability(cap: int, status_text: str | None = None) -> bool:
    """Whether this process has capability number ``cap`` in its effective set."""
    if status_text is None:
        status_text = Path("/proc/self/status").read_text()
    m = re.search(r"^CapEff:\s*([0-9a-fA-F]+)", status_text, re.M)
    return bool(m) and bool(int(m.group(1), 16) >> cap & 1)


# --- apt -----------------------------------------------------------------------------------


def dpkg_installed(package: str) -> bool:
    if shutil.which("dpkg-query") is None:
        return False
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, timeout=60
    )
    return proc.returncode == 0 and proc.stdout.strip().endswith(" installed")


def _apt_has_candidate(package: str, env: Mapping[str, str]) -> bool:
    proc = _run(["apt-cache", "policy", package], timeout=120, env=env, check=False)
    m = re.search(r"Candidate:\s*(\S+)", proc.stdout)
    return bool(m) and m.group(1) != "(none)"


def apt_install(packages: Iterable[str]) -> list[str]:
    """Install the Debian packages that are missing; returns those installed now."""
    wanted = list(dict.fromkeys(packages))
    missing = [p for p in wanted if not dpkg_installed(p)]
    if not missing:
        if wanted:
            status(f"apt packages present ({', '.join(wanted)})")
        return []
    by_hand = f"install them by hand: apt-get install {' '.join(missing)}"
    if shutil.which("apt-get") is None:
        raise UserError(
            f"packages {', '.join(missing)} are missing and there is no apt-get "
            f"on this host: {by_hand} (or your distribution's equivalent)"
        )
    if os.geteuid() != 0:
        raise UserError(
            f"packages {', '.join(missing)} are missing and installing them needs "
            f"root: rerun as root, or {by_hand}"
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if not all(_apt_has_candidate(p, env) for p in missing):
        status("apt-get update")
        _run(["apt-get", "update"], timeout=APT_TIMEOUT, env=env)
        unknown = [p for p in missing if not _apt_has_candidate(p, env)]
        if unknown:
            raise UserError(
                f"apt knows no package {', '.join(unknown)} on this host: "
                "check the package names and the apt sources"
            )
    status(f"apt-get install {' '.join(missing)}")
    _run(
        ["apt-get", "install", "-y", "--no-install-recommends", *missing],
        timeout=APT_TIMEOUT,
        env=env,
    )
    return missing


# --- Go builds -----------------------------------------------------------------------------


def go_version(go: str) -> tuple[int, int]:
    out = _run([go, "env", "GOVERSION"], timeout=60).stdout.strip()
    m = re.match(r"go(\d+)\.(\d+)", out)
    if not m:
        raise ComponentError(f"cannot read the Go version from `{go} env GOVERSION`: {out!r}")
    return int(m.group(1)), int(m.group(2))


def find_go() -> str:
    go = shutil.which("go") or next(
        (p for p in GO_FALLBACKS if os.access(p, os.X_OK)),
        None,
    )
    if go is None:
        raise UserError(
            "go not found: apt-get install golang-go or install Go >= "
            f"{GO_MIN[0]}.{GO_MIN[1]} from go.dev and put it on PATH"
        )
    have = go_version(go)
    if have < GO_MIN:
        raise UserError(
            f"{go} is Go {have[0]}.{have[1]}; building the pinned tools needs Go "
            f">= {GO_MIN[0]}.{GO_MIN[1]}: install a newer Go from go.dev"
        )
    return go


def _bin_dir(name: str, version: str) -> Path:
    return cache_dir() / "bin" / f"{name}-{version}"


def _go_env(tags: Sequence[str]) -> dict[str, str]:
    env = dict(os.environ)
    go_root = cache_dir() / "go"
    env.update(
        GOMODCACHE=str(go_root / "mod"),
        GOCACHE=str(go_root / "build"),
        CGO_ENABLED="0",
        GOFLAGS=" ".join(
            ["-trimpath", "-buildvcs=false", *([f"-tags={','.join(tags)}"] if tags else [])]
        ),
        GO111MODULE="on",
        GOWORK="off",
    )
    env.pop("GOBIN", None)
    env.pop("GOPATH", None)
    return env


def go_build(
    module: str,
    packages: Mapping[str, str] | Sequence[str],
    version: str,
    name: str,
    tags: Sequence[str] = (),
    version_vars: Sequence[str] = (),
    from_source: bool = False,
    patches: Sequence[SourcePatch] = (),
) -> dict[str, Path]:
    """Build Go programs of ``module@version`` into ``cache_dir()/bin/NAME-VERSION/``.

    ``packages`` maps the name a binary is linked as to its Go package (a plain list uses
    each package's last path element). ``version_vars`` are package variables set to
    ``version`` with ``-ldflags -X``. By default this is ``go install PKG@VERSION``;
    ``from_source`` (implied by ``patches``) builds inside a copy of the module instead,
    for modules whose go.mod has replace/exclude directives that ``go install`` refuses.
    Returns link name -> built binary. A stamp file records what was built; when it
    matches and every binary exists nothing is rebuilt.
    """
    if not isinstance(packages, Mapping):
        packages = {p.rstrip("/").rsplit("/", 1)[-1]: p for p in packages}
    for pkg in packages.values():
        if pkg != module and not pkg.startswith(module + "/"):
            raise UserError(f"package {pkg} is not in module {module}")
    from_source = from_source or bool(patches)
    target = _bin_dir(name, version)
    wanted = {
        "module": module,
        "version": version,
        "tags": sorted(tags),
        "packages": dict(sorted(packages.items())),
        "version_vars": sorted(version_vars),
    }
    if from_source:
        wanted["from_source"] = True
        wanted["patches"] = [[p.path, p.old, p.new] for p in patches]
    binaries = {link: target / pkg.rstrip("/").rsplit("/", 1)[-1] for link, pkg in packages.items()}

    def reusable() -> dict[str, Any] | None:
        try:
            stamp = json.loads((target / ".stamp.json").read_text())
        except (OSError, ValueError):
            return None
        same = {k: stamp.get(k) for k in wanted} == wanted
        return stamp if same and all(os.access(b, os.X_OK) for b in binaries.values()) else None

    if (stamp := reusable()) is not None:
        status(f"{name} {version} cached ({target}, built {stamp.get('built', '?')})")
        return binaries
    with _locked(cache_dir() / "bin" / f".{name}.lock"):
        if (stamp := reusable()) is not None:  # another run built it while we waited
            status(f"{name} {version} cached ({target})")
            return binaries
        go = find_go()
        tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        env = _go_env(tags)
        ldflags = " ".join(f"-X {var}={version}" for var in version_vars)
        what = f"{name} {version} ({', '.join(packages)})"
        status(
            f"building {what}{' from patched source' if patches else ''}; this takes minutes once"
        )
        start = time.monotonic()
        src = cache_dir() / "src" / f"{name}-{version}.tmp-{os.getpid()}"
        try:
            if from_source:
                _prepare_source(go, module, version, src, patches, env)
                rel = sorted({"./" + pkg[len(module) :].lstrip("/") for pkg in packages.values()})
                argv = [
                    go,
                    "build",
                    *([f"-ldflags={ldflags}"] if ldflags else []),
                    "-o",
                    f"{tmp}/",
                    *rel,
                ]
                cwd: Path | None = src
            else:
                env["GOBIN"] = str(tmp)
                argv = [
                    go,
                    "install",
                    *([f"-ldflags={ldflags}"] if ldflags else []),
                    *(f"{pkg}@{version}" for pkg in sorted(set(packages.values()))),
                ]
                cwd = None
            proc = _run(argv, timeout=GO_BUILD_TIMEOUT, env=env, check=False, cwd=cwd)
            if proc.returncode != 0:
                raise ComponentError(
                    f"building {what} failed: `{' '.join(argv)}` exited {proc.returncode} "
                    f"(GOFLAGS={env['GOFLAGS']!r}, CGO_ENABLED=0):\n"
                    f"{_tail(proc.stderr or proc.stdout)}"
                )
            seconds = round(time.monotonic() - start, 1)
            stamp = {
                **wanted,
                "go": ".".join(map(str, go_version(go))),
                "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "build_seconds": seconds,
            }
            (tmp / ".stamp.json").write_text(json.dumps(stamp, indent=2) + "\n")
            shutil.rmtree(target, ignore_errors=True)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(src, ignore_errors=True)
        status(f"built {name} {version} in {seconds:.0f}s ({target})")
    return binaries


def _prepare_source(
    go: str,
    module: str,
    version: str,
    dest: Path,
    patches: Sequence[SourcePatch],
    env: Mapping[str, str],
) -> None:
    """A private copy of ``module@version`` from the module cache, with ``patches`` applied.

    Files are hard links into the module cache where possible (cheap); a patched file is
    replaced by a new file, never written through its link, so the cache stays intact.
    """
    proc = _run(
        [go, "mod", "download", "-json", f"{module}@{version}"],
        timeout=GO_BUILD_TIMEOUT,
        env=env,
        check=False,
    )
    try:
        info = json.loads(proc.stdout or "{}")
    except ValueError:
        info = {}
    if proc.returncode != 0 or not info.get("Dir"):
        detail = info.get("Error") or _tail(proc.stderr or proc.stdout)
        raise ComponentError(f"cannot download {module}@{version}: {detail}")
    shutil.rmtree(dest, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(info["Dir"], dest, copy_function=link_or_copy, symlinks=True)
    for root, _dirs, _files in os.walk(dest):
        os.chmod(root, 0o755)  # the directories are new; the linked files keep their mode
    for patch in patches:
        path = dest / patch.path
        text = path.read_text()
        found = text.count(patch.old)
        if found != 1:
            raise ComponentError(
                f"cannot apply the build patch to {module}@{version}/{patch.path}: expected "
                f"the line once, found it {found} times ({patch.why}); the pin changed: "
                "update the patch or the pinned version"
            )
        path.unlink()
        path.write_text(text.replace(patch.old, patch.new))


def build_tool(tool: GoTool) -> dict[str, Path]:
    return go_build(
        tool.module,
        tool.packages,
        tool.version,
        tool.name,
        tags=tool.tags,
        version_vars=tool.version_vars,
        from_source=tool.from_source,
        patches=tool.patches,
    )


# --- links ---------------------------------------------------------------------------------


def install_links(
    binaries: Mapping[str, Path], bin_dir: Path | None = None, *, system: bool = False
) -> dict[str, Path]:
    """Symlink each built binary as ``bin_dir/NAME`` (default ``cache_dir()/path``).

    ``system=True`` links into /usr/local/bin instead; a file there that is not a
    symlink is never replaced. Returns link -> target.
    """
    if bin_dir is None:
        bin_dir = Path("/usr/local/bin") if system else path_dir()
    bin_dir.mkdir(parents=True, exist_ok=True)
    done: dict[str, Path] = {}
    changed = []
    for link_name, target in binaries.items():
        target = Path(target).resolve()
        link = bin_dir / link_name
        if link.is_symlink() and Path(os.readlink(link)) == target:
            done[link_name] = target
            continue
        if link.exists() and not link.is_symlink():
            raise UserError(
                f"{link} exists and is not a link sandcheck made: remove or rename "
                f"it, or link into another directory"
            )
        tmp = bin_dir / f".{link_name}.tmp-{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(target)
        os.replace(tmp, link)
        done[link_name] = target
        changed.append(link_name)
    if changed:
        status(f"linked {', '.join(changed)} into {bin_dir}")
    return done


def search_path(extra_first: Sequence[Path] = ()) -> str:
    """PATH for processes sandcheck starts: its link dirs, then the inherited PATH."""
    parts = [str(p) for p in (*extra_first, path_dir())]
    return os.pathsep.join([*parts, os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")])


from sandcheck.clusters.host.cgroups import cgroup2_controllers, cgroup2_mount, cgroup_mode  # noqa: E402,F401

# --- cgroups -------------------------------------------------------------------------------


def prepare_cgroups_for_crun(dry_run: bool = False) -> list[str]:
    """Make a hybrid-cgroup host usable by crun; returns the changes made (or planned).

    crun refuses a hybrid host whose cgroup2 mount still has controllers ("cgroups in
    hybrid mode not supported, drop all controllers from cgroupv2"). Mounting each such
    controller as a cgroup v1 hierarchy under /sys/fs/cgroup/NAME moves it off cgroup2.
    Nothing is done on a pure v1 or v2 host or when the cgroup2 list is already empty.
    """
    if cgroup_mode() != "hybrid":
        return []
    controllers = cgroup2_controllers()
    if not controllers:
        status("cgroups: hybrid, cgroup2 holds no controllers; nothing to do for crun")
        return []
    if os.geteuid() != 0:
        raise UserError(
            f"crun cannot run on this hybrid-cgroup host while cgroup2 holds "
            f"{', '.join(controllers)}; as root: "
            + "; ".join(
                f"mkdir -p /sys/fs/cgroup/{c} && mount -t cgroup -o {c} cgroup /sys/fs/cgroup/{c}"
                for c in controllers
            )
        )
    changes = []
    for ctl in controllers:
        point = Path("/sys/fs/cgroup") / ctl
        change = f"mount -t cgroup -o {ctl} cgroup {point}"
        changes.append(change)
        if dry_run:
            continue
        status(f"cgroups: {change} (moves {ctl} off cgroup2 so crun accepts this host)")
        point.mkdir(exist_ok=True)
        _run(["mount", "-t", "cgroup", "-o", ctl, "cgroup", str(point)], timeout=60)
    left = [] if dry_run else cgroup2_controllers()
    if left:
        raise ComponentError(f"cgroup2 still holds {', '.join(left)} after {changes}")
    return changes


def undo_cgroups_for_crun(changes: Iterable[str]) -> list[str]:
    """Unmount the hierarchies ``prepare_cgroups_for_crun`` mounted (controllers go back to
    cgroup2 once their v1 hierarchy has no child cgroups)."""
    undone = []
    for change in changes:
        point = change.rsplit(" ", 1)[-1]
        if _run(["umount", point], timeout=60, check=False).returncode == 0:
            with contextlib.suppress(OSError):
                os.rmdir(point)
            undone.append(point)
            status(f"cgroups: unmounted {point}")
    return undone


# --- versions ------------------------------------------------------------------------------


def _which(name: str, extra: Sequence[Path] = ()) -> str | None:
    for d in (*extra, path_dir()):
        cand = Path(d) / name
        if os.access(cand, os.X_OK):
            return str(cand)
    return shutil.which(name)


def _version_of(argv: Sequence[str], pattern: str = r"v?(\d+\.\d+[\w.+~-]*)") -> str | None:
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(pattern, proc.stdout + proc.stderr)
    return m.group(1) if m else None


def versions() -> dict[str, Any]:
    """Versions of everything a report should name; None for what is not installed."""
    out: dict[str, Any] = {}
    cd1 = shutil.which("containerd")
    out["containerd"] = (
        _version_of([cd1, "--version"], r"containerd\s+\S+\s+v?(\S+)") if cd1 else None
    )
    for key, where in (
        ("containerd17", containerd17_path_dir()),
        ("containerd2", containerd2_path_dir()),
    ):
        exe = where / "containerd"
        out[key] = (
            _version_of([str(exe), "--version"], r"containerd\s+\S+\s+v?(\S+)")
            if os.access(exe, os.X_OK)
            else None
        )
    runc = shutil.which("runc")
    out["runc"] = _version_of([runc, "--version"], r"runc version (\S+)") if runc else None
    crun = shutil.which("crun")
    out["crun"] = _version_of([crun, "--version"], r"crun version (\S+)") if crun else None
    runsc = _which("runsc")
    out["runsc"] = _version_of([runsc, "--version"], r"runsc version (\S+)") if runsc else None
    crictl = _which("crictl")
    out["crictl"] = (
        _version_of([crictl, "--version"], r"crictl version v?(\S+)") if crictl else None
    )
    out["kernel"] = platform.release()
    out["cgroup_mode"] = cgroup_mode()
    out["cgroup2_controllers"] = cgroup2_controllers()
    return out


# --- everything ----------------------------------------------------------------------------


@dataclass
class Provisioned:
    """What ``provision`` did and where things are."""

    path_dir: Path
    containerd_path_dirs: dict[str, Path] = field(default_factory=dict)
    """containerd build ("1.7", "2") -> the dir to put first on PATH for that daemon."""
    runtimes: dict[str, dict[str, Any]] = field(default_factory=dict)
    binaries: dict[str, Path] = field(default_factory=dict)
    host_changes: list[str] = field(default_factory=list)
    versions: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "path_dir": str(self.path_dir),
            "containerd_path_dirs": {k: str(v) for k, v in self.containerd_path_dirs.items()},
            "runtimes": self.runtimes,
            "binaries": {k: str(v) for k, v in self.binaries.items()},
            "host_changes": self.host_changes,
            "versions": self.versions,
        }


def provision(
    runtimes: Sequence[str],
    containerd2: bool = True,
    containerd17: bool | None = None,
    prepare_cgroups: bool = True,
    shim_oom_tolerant: bool | None = None,
    kubernetes: bool = False,
) -> dict[str, Any]:
    """Install or build what ``runtimes`` need; returns a report (see ``Provisioned``).

    runc and crun come from Debian, runsc from the pinned gVisor build, crictl always.
    containerd 2.x is built when ``containerd2``; containerd 1.7 when ``containerd17``
    (default: when runsc is asked for, since Debian's containerd 1.6 cannot start the
    gVisor shim). The gVisor shim is the OOM-score tolerant build when
    ``shim_oom_tolerant`` (default: when this process lacks CAP_SYS_RESOURCE). On a
    hybrid-cgroup host with crun, ``prepare_cgroups`` moves cgroup2's controllers to v1
    hierarchies and reports that in ``host_changes``. A runtime that cannot be
    provisioned here (kata, or a runtime sandcheck does not know how to install) is
    reported unavailable with the reason; it is not an error. ``kubernetes`` also builds
    the pinned Kubernetes server binaries and etcd (clusters.kubernetes_build) and links
    them next to the other tools.
    """
    result = Provisioned(path_dir=path_dir())
    packages = [*APT_PACKAGES["base"]]
    for rt in runtimes:
        packages.extend(APT_PACKAGES.get(rt, ()))
    apt_install(packages)

    built = dict(build_tool(CRI_TOOLS))
    shim_note = None
    if "runsc" in runtimes:
        try:
            built.update(build_tool(GVISOR))
        except (ComponentError, UserError) as exc:
            # Debian's runsc (2022) runs containers by itself but ships no containerd shim,
            # so pods of the runsc handler cannot start under CRI with it: the node tier
            # then skips runsc, naming the missing shim.
            status(f"gVisor build failed ({str(exc).splitlines()[0]}); falling back to "
                   "Debian's runsc package, which has no containerd-shim-runsc-v1")
            apt_install(["runsc"])
            shim_oom_tolerant = False
        if shim_oom_tolerant is None:
            shim_oom_tolerant = not has_capability(CAP_SYS_RESOURCE)
        if shim_oom_tolerant:
            built.update(build_tool(GVISOR_SHIM_OOM_TOLERANT))
            shim_note = (
                "containerd-shim-runsc-v1 is built to tolerate a refused "
                "oom_score_adj write (this host's root lacks CAP_SYS_RESOURCE)"
            )
            status(f"runsc: {shim_note}")
    if kubernetes:
        from sandcheck.clusters.provision import kubernetes as kubernetes_build

        built.update(kubernetes_build.build_kubernetes())
        built["etcd"] = kubernetes_build.build_etcd()
    result.binaries.update(install_links(built))
    if containerd17 is None:
        containerd17 = "runsc" in runtimes
    for key, wanted, tool, where in (
        ("1.7", containerd17, CONTAINERD17, containerd17_path_dir()),
        ("2", containerd2, CONTAINERD2, containerd2_path_dir()),
    ):
        if wanted:
            got = build_tool(tool)
            install_links(got, where)
            result.binaries.update({f"{k} ({tool.version})": v for k, v in got.items()})
            result.containerd_path_dirs[key] = where

    for rt in runtimes:
        if rt == "kata":
            result.runtimes[rt] = {"available": False, "reason": KATA_UNAVAILABLE}
            status(f"kata unavailable: {KATA_UNAVAILABLE}")
            continue
        if rt not in PROVISIONABLE:
            binary = _which(rt)
            result.runtimes[rt] = {"available": binary is not None, "binary": binary}
            if binary is None:
                result.runtimes[rt]["reason"] = (
                    f"sandcheck does not install {rt}: install it by hand and put it on PATH"
                )
                status(f"{rt} not provisioned: {result.runtimes[rt]['reason']}")
            continue
        binary = _which(rt)
        entry: dict[str, Any] = {"available": binary is not None, "binary": binary}
        if binary is None:
            entry["reason"] = f"{rt} is not on PATH after provisioning"
        if rt == "runsc":
            entry["shim"] = str(built.get("containerd-shim-runsc-v1"))
            entry["needs"] = (
                "containerd >= 1.7 (the shim answers with the v2 bootstrap "
                "protocol, which containerd 1.6 cannot read)"
            )
            if shim_note:
                entry["note"] = shim_note
        if rt == "crun":
            entry["note"] = (
                "containerd 2.x writes sandbox specs with ociVersion 1.3.0, which "
                "crun 1.8 (Debian 12) rejects: use containerd 1.7 with it"
            )
        result.runtimes[rt] = entry
    if "crun" in runtimes and prepare_cgroups:
        result.host_changes.extend(prepare_cgroups_for_crun())
    result.versions = versions()
    return result.as_dict()
