"""Kubernetes server binaries and etcd, built from the Go module proxy and cached.

``k8s.io/kubernetes`` cannot be ``go install``ed: its go.mod requires the staging modules
(k8s.io/api, k8s.io/client-go, ...) at v0.0.0 and replaces them with local directories.
So a small build module is generated in the cache: it requires k8s.io/kubernetes at the
pinned release and replaces every staging module named in that release's ``replace`` block
with its published v0.MINOR.PATCH. ``go mod tidy`` (over a ``tools.go`` that blank-imports
the commands) fills in go.sum and the indirect requirements once; then one ``go build``
links all commands, the version stamped through -ldflags as Kubernetes' own build does.

etcd: Kubernetes 1.34 supports external etcd >= 3.5.24 and is released against 3.6.5
(kubeadm's default, and what its integration tests demand); Debian 12 ships 3.4.23. So
etcd is built the same way (``go.etcd.io/etcd/server/v3`` is etcd's main package; its
go.mod has local replaces too, so ``go install ...@version`` is refused).

Layout under ``cache_dir()``:
  go/mod, go/build       GOMODCACHE and GOCACHE, shared with the other Go builds
  go/work/NAME-VERSION   the generated build module (go.mod, go.sum, tools.go)
  go/tmp                 GOTMPDIR, so binaries are renamed, not copied, into place
  bin/NAME-VERSION       the binaries and ``.stamp.json``; reused while the stamp matches
  logs/NAME-VERSION.log  the full output of the last build
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sandcheck.clusters.errors import ComponentError, UserError
from sandcheck.clusters.provision import _locked, cache_dir, find_go

KUBERNETES_VERSION = "v1.34.12"
KUBERNETES_MODULE = "k8s.io/kubernetes"
KUBERNETES_COMMANDS = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kubectl",
)
# The packages whose version variables Kubernetes' build stamps (hack/lib/version.sh).
KUBERNETES_VERSION_PACKAGES = ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")

ETCD_VERSION = "v3.6.5"
ETCD_MODULE = "go.etcd.io/etcd/server/v3"

# Bump when the generated go.mod or the build flags change: cached binaries are rebuilt.
BUILD_RECIPE = 1

MODULE_TIMEOUT = 1800.0  # go mod download / tidy: network plus unpacking ~700 MB
BUILD_TIMEOUT = 5400.0  # a cold build of all five commands on 2 busy cores
LOG_TAIL_LINES = 40

Progress = Callable[[str], None]


def print_to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class GoBuildError(ComponentError):
    """A go command failed; the message carries the log tail and the log path."""

    def __init__(self, message: str, log_path: Path):
        super().__init__(message)
        self.log_path = log_path


# --- pure helpers (no go, no network) ------------------------------------------------------


def staging_version(kubernetes_version: str) -> str:
    """v1.34.12 -> v0.34.12: the tag the staging modules are published under."""
    m = re.fullmatch(r"v1\.(\d+)\.(\d+)(-[0-9A-Za-z.-]+)?", kubernetes_version)
    if not m:
        raise UserError(f"not a Kubernetes release version: {kubernetes_version!r} "
                        "(expected v1.MINOR.PATCH)")
    return f"v0.{m.group(1)}.{m.group(2)}{m.group(3) or ''}"


def _directives(gomod: str, verb: str) -> list[str]:
    """The lines of a go.mod directive, both single-line and block form, comments dropped."""
    found: list[str] = []
    in_block = False
    for raw in gomod.splitlines():
        line = raw.split("//", 1)[0].strip()
        if not line:
            continue
        if in_block:
            if line == ")":
                in_block = False
            else:
                found.append(line)
        elif line == f"{verb} (":
            in_block = True
        elif line.startswith(verb + " "):
            found.append(line[len(verb):].strip())
    return found


def parse_replaces(gomod: str) -> list[tuple[str, str]]:
    """``(old, new)`` of every replace directive; each side is ``path`` or ``path version``."""
    pairs = []
    for line in _directives(gomod, "replace"):
        old, sep, new = line.partition("=>")
        if sep:
            pairs.append((" ".join(old.split()), " ".join(new.split())))
    return pairs


def _is_local(target: str) -> bool:
    return target.startswith(("./", "../", "/"))


def _copied_header(dep_gomod: str) -> list[str]:
    """The go and godebug directives of a dependency: the main module decides both, so they
    are copied to build the dependency the way its own repository does."""
    lines = [f"go {v}" for v in _directives(dep_gomod, "go")[:1]]
    lines += [f"godebug {v}" for v in _directives(dep_gomod, "godebug")]
    return lines


def render_kubernetes_gomod(kubernetes_gomod: str, version: str = KUBERNETES_VERSION) -> str:
    """The build module's go.mod: require k8s.io/kubernetes@version, and replace each staging
    module (a local-path replace in kubernetes' go.mod) with its published release."""
    staging = staging_version(version)
    replaces = []
    for old, new in parse_replaces(kubernetes_gomod):
        path = old.split()[0]
        if _is_local(new):
            replaces.append(f"\t{path} => {path} {staging}")
        else:  # a non-local replace is kept as it is, so the build matches the release's
            replaces.append(f"\t{old} => {new}")
    if not replaces:
        raise ComponentError(f"{KUBERNETES_MODULE}@{version}'s go.mod has no replace block: "
                             "the staging modules cannot be mapped to published versions")
    return "\n".join([
        "// Generated by sandcheck (clusters/kubernetes_build.py); rewritten on every build.",
        "module sandcheck.local/kubernetes-build",
        "",
        *_copied_header(kubernetes_gomod),
        "",
        f"require {KUBERNETES_MODULE} {version}",
        "",
        "replace (",
        *replaces,
        ")",
        "",
    ])


def render_etcd_gomod(etcd_gomod: str, version: str = ETCD_VERSION) -> str:
    """The etcd build module: etcd's server module requires its sibling modules at the same
    version, so its local replaces need no counterpart here."""
    return "\n".join([
        "// Generated by sandcheck (clusters/kubernetes_build.py); rewritten on every build.",
        "module sandcheck.local/etcd-build",
        "",
        *[line for line in _copied_header(etcd_gomod) if line.startswith("go ")],
        "",
        f"require {ETCD_MODULE} {version}",
        "",
    ])


def render_tools_go(packages: Sequence[str]) -> str:
    """Blank imports that make ``go mod tidy`` keep every module the commands need."""
    imports = "\n".join(f'\t_ "{p}"' for p in sorted(packages))
    return f"//go:build tools\n\npackage tools\n\nimport (\n{imports}\n)\n"


def kubernetes_ldflags(version: str, build_date: str) -> str:
    """What hack/lib/version.sh passes, less the git commit (a module zip has none)."""
    m = re.fullmatch(r"v(\d+)\.(\d+)\.\d+.*", version)
    if not m:
        raise UserError(f"not a Kubernetes release version: {version!r}")
    values = {
        "gitVersion": version,
        "gitMajor": m.group(1),
        "gitMinor": m.group(2),
        "gitTreeState": "clean",
        "gitCommit": "",  # leaves user agents saying kubernetes/unknown, not $Format
        "buildDate": build_date,
    }
    flags = ["-s", "-w"]
    for pkg in KUBERNETES_VERSION_PACKAGES:
        flags += [f"-X {pkg}.{key}={value}" for key, value in values.items()]
    return " ".join(flags)


# --- go plumbing ---------------------------------------------------------------------------


def go_env() -> dict[str, str]:
    root = cache_dir() / "go"
    tmp = root / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        GOMODCACHE=str(root / "mod"),
        GOCACHE=str(root / "build"),
        GOTMPDIR=str(tmp),
        CGO_ENABLED="0",
        GOFLAGS="-trimpath -buildvcs=false",
        GO111MODULE="on",
        GOWORK="off",
    )
    for name in ("GOBIN", "GOPATH", "GOOS", "GOARCH"):
        env.pop(name, None)
    return env


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _run_logged(argv: list[str], *, cwd: Path, env: Mapping[str, str], log: Path,
                timeout: float, what: str, poll: Callable[[], None] | None = None) -> None:
    """Run a go command with its output appended to ``log``; raise GoBuildError on failure."""
    with open(log, "a") as fh:
        fh.write(f"\n$ (cd {shlex.quote(str(cwd))} && {shlex.join(argv)})\n")
        fh.flush()
        start = time.monotonic()
        try:
            proc = subprocess.Popen(argv, cwd=cwd, env=dict(env), stdout=fh,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        except OSError as exc:
            raise UserError(f"cannot run {argv[0]}: {exc}") from None
        rc = None
        try:
            while rc is None:
                try:
                    rc = proc.wait(timeout=1.0)
                except subprocess.TimeoutExpired:
                    if poll is not None:
                        poll()
                    if time.monotonic() - start > timeout:
                        break
        finally:
            if rc is None:  # timed out or interrupted: stop the go command and its children
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        fh.write(f"# exit {rc} after {time.monotonic() - start:.1f}s\n")
    if rc is None:
        raise GoBuildError(f"{what}: `{' '.join(argv[:3])} ...` did not finish within "
                           f"{timeout:.0f}s\n{_tail(log)}\nfull log: {log}", log)
    if rc != 0:
        raise GoBuildError(f"{what} failed: `{' '.join(argv[:3])} ...` exited {rc}\n"
                           f"{_tail(log)}\nfull log: {log}", log)


def _download_gomod(go: str, env: Mapping[str, str], module: str, version: str, log: Path,
                    cwd: Path) -> tuple[str, str | None]:
    """(go.mod text, release time) of module@version, through the module proxy; run outside
    the build module, so a broken go.mod left there cannot get in the way."""
    what = f"downloading {module}@{version}"
    argv = [go, "mod", "download", "-json", f"{module}@{version}"]
    proc = subprocess.run(argv, cwd=cwd, env=dict(env), capture_output=True, text=True,
                          timeout=MODULE_TIMEOUT, stdin=subprocess.DEVNULL)
    with open(log, "a") as fh:
        fh.write(f"\n$ {shlex.join(argv)}\n{proc.stdout}{proc.stderr}# exit {proc.returncode}\n")
    try:
        info = json.loads(proc.stdout)
    except ValueError:
        info = {}
    if proc.returncode != 0 or info.get("Error") or not info.get("GoMod"):
        detail = info.get("Error") or (proc.stderr or proc.stdout).strip()
        raise GoBuildError(f"{what} failed: {detail}\n(is the Go module proxy reachable? "
                           f"GOPROXY={env.get('GOPROXY') or 'default'})\nfull log: {log}", log)
    release_time = None
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        release_time = json.loads(Path(info["Info"]).read_text())["Time"]
    return Path(info["GoMod"]).read_text(), release_time


# --- the cached build ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Spec:
    name: str  # "kubernetes", "etcd": names the bin, work and log entries
    module: str
    version: str
    packages: Mapping[str, str]  # binary name -> Go main package
    render_gomod: Callable[[str, str], str]  # (dependency go.mod, version) -> our go.mod
    ldflags: Callable[[str | None], str]  # release time -> -ldflags

    @property
    def label(self) -> str:
        return f"{self.name}-{self.version}"


def exe_name(package: str) -> str:
    """The file ``go build -o DIR/`` writes for a main package: its last path element, or
    the one before a major-version suffix (go.etcd.io/etcd/server/v3 -> server)."""
    parts = package.rstrip("/").split("/")
    if len(parts) > 1 and re.fullmatch(r"v\d+", parts[-1]):
        return parts[-2]
    return parts[-1]


def _bin_dir(spec: _Spec) -> Path:
    return cache_dir() / "bin" / spec.label


def _read_stamp(target: Path) -> dict:
    try:
        stamp = json.loads((target / ".stamp.json").read_text())
    except (OSError, ValueError):
        return {}
    return stamp if isinstance(stamp, dict) else {}


def _cached(spec: _Spec, names: Sequence[str]) -> dict[str, Path] | None:
    """The binaries, when the stamp vouches for every one of them; else None."""
    target = _bin_dir(spec)
    stamp = _read_stamp(target)
    if stamp.get("version") != spec.version or stamp.get("recipe") != BUILD_RECIPE:
        return None
    built = stamp.get("binaries") or {}
    found = {}
    for name in names:
        entry = built.get(name)
        path = target / name
        try:
            size = path.stat().st_size
        except OSError:
            return None
        if not isinstance(entry, dict) or entry.get("size") != size \
                or entry.get("package") != spec.packages[name] or not os.access(path, os.X_OK):
            return None
        found[name] = path
    return found


def _prepare_module(spec: _Spec, go: str, env: Mapping[str, str], log: Path,
                    progress: Progress) -> tuple[Path, str | None]:
    """The build module's directory, tidied; and the release time for the build date."""
    work = cache_dir() / "go" / "work" / spec.label
    work.mkdir(parents=True, exist_ok=True)
    dep_gomod, release_time = _download_gomod(go, env, spec.module, spec.version, log,
                                              cwd=work.parent)
    gomod = spec.render_gomod(dep_gomod, spec.version)
    tools = render_tools_go(spec.packages.values())
    marker = work / "go.mod.generated"
    if ((work / "go.sum").is_file() and (work / "tools.go").is_file()
            and _read(marker) == gomod and _read(work / "tools.go") == tools):
        return work, release_time
    progress(f"{spec.label}: preparing the build module in {work} (go mod tidy; the first "
             "time this downloads the modules)")
    start = time.monotonic()
    marker.unlink(missing_ok=True)
    (work / "go.sum").unlink(missing_ok=True)
    (work / "go.mod").write_text(gomod)
    (work / "tools.go").write_text(tools)
    _run_logged([go, "mod", "tidy"], cwd=work, env=env, log=log, timeout=MODULE_TIMEOUT,
                what=f"{spec.label}: go mod tidy")
    marker.write_text(gomod)
    progress(f"{spec.label}: build module ready in {time.monotonic() - start:.1f}s")
    return work, release_time


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _build(spec: _Spec, names: Sequence[str], progress: Progress) -> dict[str, Path]:
    unknown = [n for n in names if n not in spec.packages]
    if unknown:
        raise UserError(f"unknown {spec.name} command(s) {', '.join(unknown)}: "
                        f"choose from {', '.join(spec.packages)}")
    names = list(dict.fromkeys(names))
    target = _bin_dir(spec)
    if (found := _cached(spec, names)) is not None:
        progress(f"{spec.label}: cached in {target} ({', '.join(names)})")
        return found
    with _locked(cache_dir() / "bin" / f".{spec.label}.lock"):
        if (found := _cached(spec, names)) is not None:  # built while we waited
            progress(f"{spec.label}: cached in {target} ({', '.join(names)})")
            return found
        stamp = _read_stamp(target)
        if stamp.get("version") != spec.version or stamp.get("recipe") != BUILD_RECIPE:
            stamp = {}
        have = stamp.get("binaries") or {}
        missing = [n for n in names if _cached(spec, [n]) is None]

        go = find_go()
        env = go_env()
        log = cache_dir() / "logs" / f"{spec.label}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"# {spec.label}: building {', '.join(missing)} "
                       f"({time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())})\n")
        work, release_time = _prepare_module(spec, go, env, log, progress)

        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        argv = [go, "build", "-trimpath", "-buildvcs=false",
                f"-ldflags={spec.ldflags(release_time)}", "-o", str(tmp) + os.sep,
                *(spec.packages[n] for n in missing)]
        start = time.monotonic()
        done: dict[str, float] = {}
        seen: dict[str, int] = {}

        def report_new(final: bool = False) -> None:
            # go build renames each linked binary into place (GOTMPDIR is on the same file
            # system); a size unchanged since the last poll also covers a copy.
            for n in missing:
                if n in done:
                    continue
                try:
                    size = (tmp / exe_name(spec.packages[n])).stat().st_size
                except OSError:
                    continue
                if final or seen.get(n) == size:
                    done[n] = time.monotonic() - start
                    progress(f"{spec.label}: {n}: done in {done[n]:.0f}s "
                             f"({size / 2**20:.0f} MiB)")
                seen[n] = size

        for n in missing:
            progress(f"{spec.label}: {n}: building (log: {log})")
        try:
            _run_logged(argv, cwd=work, env=env, log=log, timeout=BUILD_TIMEOUT,
                        what=f"building {spec.label} ({', '.join(missing)})", poll=report_new)
            seconds = time.monotonic() - start
            report_new(final=True)
            target.mkdir(parents=True, exist_ok=True)
            go_version = subprocess.run([go, "env", "GOVERSION"], env=dict(env), timeout=60,
                                        capture_output=True, text=True).stdout.strip()
            for n in missing:
                built = tmp / exe_name(spec.packages[n])
                if not built.is_file():
                    raise GoBuildError(f"building {spec.label}: go build succeeded but wrote "
                                       f"no {built.name} into {tmp}\nfull log: {log}", log)
                size = built.stat().st_size
                os.replace(built, target / n)
                have[n] = {"package": spec.packages[n], "size": size,
                           "build_seconds": round(done.get(n, seconds), 1)}
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        stamp = {
            "name": spec.name,
            "module": spec.module,
            "version": spec.version,
            "recipe": BUILD_RECIPE,
            "go": go_version,
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "log": str(log),
            "binaries": dict(sorted(have.items())),
        }
        partial = target / f".stamp.json.tmp-{os.getpid()}"
        partial.write_text(json.dumps(stamp, indent=2) + "\n")
        os.replace(partial, target / ".stamp.json")
        progress(f"{spec.label}: built {len(missing)} in {seconds:.0f}s into {target}")
    found = _cached(spec, names)
    if found is None:
        raise GoBuildError(f"{spec.label}: built, but the binaries in {target} do not match "
                           f"their stamp\nfull log: {log}", log)
    return found


def kubernetes_spec(version: str = KUBERNETES_VERSION) -> _Spec:
    return _Spec(
        name="kubernetes",
        module=KUBERNETES_MODULE,
        version=version,
        packages={c: f"{KUBERNETES_MODULE}/cmd/{c}" for c in KUBERNETES_COMMANDS},
        render_gomod=render_kubernetes_gomod,
        ldflags=lambda released: kubernetes_ldflags(version, released or _now()),
    )


def etcd_spec(version: str = ETCD_VERSION) -> _Spec:
    return _Spec(
        name="etcd",
        module=ETCD_MODULE,
        version=version,
        packages={"etcd": ETCD_MODULE},
        render_gomod=render_etcd_gomod,
        ldflags=lambda _released: "-s -w",
    )


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def build_kubernetes(commands: Sequence[str] = KUBERNETES_COMMANDS,
                     progress: Progress = print_to_stderr) -> dict[str, Path]:
    """Build (once) and return ``{command: binary}`` for the pinned Kubernetes release.

    The build date stamped is the release's publication time on the module proxy, so a
    rebuild gives the same version output.
    """
    return _build(kubernetes_spec(), commands, progress)


def build_etcd(progress: Progress = print_to_stderr) -> Path:
    """Build (once) and return the etcd server binary of the pinned release."""
    return _build(etcd_spec(), ["etcd"], progress)["etcd"]
