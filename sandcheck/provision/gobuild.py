"""The one Go build engine: a pinned ``GoTool`` in, its binaries in the cache out, once.

A build is reused while its stamp (``bin/LABEL/.stamp.json``) names the same tool (module,
version, packages, tags, link variables, patches, build module revision) and every binary
is there: checking needs no Go and no network. Concurrent runs build once (a flock). Three
ways to build, chosen by the tool: ``go install PKG@VERSION``; ``go build`` in a copy of
the module (go.mod directives ``go install`` refuses, source patches, or a test binary:
``go test -c``); ``go build`` in a generated build module (Kubernetes, etcd: see
kubernetes.py).

Layout under ``cache_dir()``:
  go/mod, go/build, go/tmp  GOMODCACHE, GOCACHE and GOTMPDIR, shared by every build
  go/work/LABEL             a generated build module, kept so ``go mod tidy`` runs once
  src/LABEL.tmp-PID         a (patched) copy of a module, removed after the build
  bin/LABEL                 the binaries and the stamp
  logs/LABEL.log            the output of the last build's go commands
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
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandcheck.errors import ComponentError, UserError
from sandcheck.host.command import run
from sandcheck.host.files import locked
from sandcheck.progress import Progress
from sandcheck.provision.command import STDERR
from sandcheck.provision.paths import cache_dir
from sandcheck.provision.pins import GO_MIN
from sandcheck.provision.tools import CachedBuild, GoTool, SourcePatch
from sandcheck.timeouts import TIMEOUTS, WaitTimeout, wait_until

GO_FALLBACKS = ("/usr/local/go/bin/go", "/usr/lib/go/bin/go")
LOG_TAIL_LINES = 40


class GoBuildError(ComponentError):
    """A go command failed; the message carries the log tail and the log path."""

    def __init__(self, message: str, log_path: Path):
        super().__init__(message)
        self.log_path = log_path


# --- go itself -----------------------------------------------------------------------------


def go_version(go: str) -> tuple[int, int]:
    out = run([go, "env", "GOVERSION"], timeout=TIMEOUTS.command).stdout.strip()
    m = re.match(r"go(\d+)\.(\d+)", out)
    if not m:
        raise ComponentError(f"cannot read the Go version from `{go} env GOVERSION`: {out!r}")
    return int(m.group(1)), int(m.group(2))


def find_go() -> str:
    go = shutil.which("go") or next((p for p in GO_FALLBACKS if os.access(p, os.X_OK)), None)
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


def go_env(tags: Sequence[str] = ()) -> dict[str, str]:
    """The inherited environment with sandcheck's module and build caches, static linking,
    reproducible paths, and no workspace or cross-compilation settings of the caller."""
    root = cache_dir() / "go"
    (root / "tmp").mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        GOMODCACHE=str(root / "mod"),
        GOCACHE=str(root / "build"),
        GOTMPDIR=str(root / "tmp"),
        CGO_ENABLED="0",
        GOFLAGS=" ".join(
            ["-trimpath", "-buildvcs=false", *([f"-tags={','.join(tags)}"] if tags else [])]
        ),
        GO111MODULE="on",
        GOWORK="off",
    )
    for name in ("GOBIN", "GOPATH", "GOOS", "GOARCH"):
        env.pop(name, None)
    return env


# --- the stamp -----------------------------------------------------------------------------


def stamp_identity(tool: GoTool) -> dict[str, Any]:
    """What a cached build must have been built from. Keys a tool does not use are left out,
    so stamps written before those keys existed still match."""
    ident: dict[str, Any] = {
        "module": tool.module,
        "version": tool.version,
        "tags": sorted(tool.tags),
        "packages": dict(sorted(tool.packages.items())),
        "version_vars": sorted(tool.version_vars),
    }
    if tool.from_source or tool.patches:
        ident["from_source"] = True
        ident["patches"] = [[p.path, p.old, p.new] for p in tool.patches]
    if tool.link_vars:
        ident["link_vars"] = dict(sorted(tool.link_vars.items()))
    if tool.strip:
        ident["strip"] = True
    if tool.build_module is not None:
        ident["build_module"] = tool.build_module.revision
    if tool.test_binary:
        ident["test_binary"] = True
    return ident


def read_stamp(target: Path) -> dict[str, Any]:
    try:
        stamp = json.loads((target / ".stamp.json").read_text())
    except (OSError, ValueError):
        return {}
    return stamp if isinstance(stamp, dict) else {}


def cached(tool: GoTool) -> dict[str, Path] | None:
    """The tool's binaries when its stamp matches and every one is there; else None."""
    return cached_as(tool, stamp_identity(tool))


def cached_as(tool: CachedBuild, ident: dict[str, Any]) -> dict[str, Path] | None:
    """``tool``'s binaries when its stamp holds ``ident`` and every one is there (any
    engine's build); else None."""
    stamp = read_stamp(tool.target())
    if {k: stamp.get(k) for k in ident} != ident:
        return None
    binaries = tool.binaries()
    return binaries if all(os.access(b, os.X_OK) for b in binaries.values()) else None


def ldflags(tool: GoTool, released: str | None) -> str:
    """-ldflags of a build; ``released`` (the release's publication time) fills
    ``{released}`` in link variables, the build time when the proxy did not say."""
    when = released or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    flags = ["-s", "-w"] if tool.strip else []
    flags += [f"-X {var}={tool.version}" for var in tool.version_vars]
    flags += [f"-X {var}={value.replace('{released}', when)}"
              for var, value in tool.link_vars.items()]
    return " ".join(flags)


# --- the build -----------------------------------------------------------------------------


def build(tool: GoTool, progress: Progress = STDERR) -> dict[str, Path]:
    """Build (once) the tool's packages into ``tool.target()``; returns link name -> binary."""
    for pkg in tool.packages.values():
        if pkg != tool.module and not pkg.startswith(tool.module + "/"):
            raise UserError(f"package {pkg} is not in module {tool.module}")
    return build_once(tool, lambda: cached(tool),
                      lambda: _build_into(tool, tool.target(), find_go(), progress), progress)


def build_once(tool: CachedBuild, found: Callable[[], dict[str, Path] | None],
               make: Callable[[], float], progress: Progress) -> dict[str, Path]:
    """The binaries ``found`` returns from the cache, else ``make`` them (it returns the
    seconds it took) under the build's lock, once across concurrent runs; the Go and the
    cargo engine alike."""
    target = tool.target()
    if (binaries := found()) is not None:
        progress(f"{tool.label}: cached in {target} (built {read_stamp(target).get('built')})")
        return binaries
    with locked(cache_dir() / "bin" / f".{tool.label}.lock"):
        if (binaries := found()) is not None:  # another run built it while we waited
            progress(f"{tool.label}: cached in {target}")
            return binaries
        seconds = make()
        progress(f"{tool.label}: built in {seconds:.0f}s into {target}")
    binaries = found()
    if binaries is None:
        raise ComponentError(f"{tool.label}: built, but {target} does not match its stamp")
    return binaries


def _build_into(tool: GoTool, target: Path, go: str, progress: Progress) -> float:
    env = go_env(tool.tags)
    log = cache_dir() / "logs" / f"{tool.label}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(f"# {tool.label}: {', '.join(tool.packages)} "
                   f"({time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())})\n")
    how = " from patched source" if tool.patches else ""
    progress(f"{tool.label}: building {', '.join(tool.packages)}{how}; this takes minutes "
             f"once (log: {log})")
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    src = cache_dir() / "src" / f"{tool.label}.tmp-{os.getpid()}"
    start = time.monotonic()
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        module = download(go, env, tool.module, tool.version, log)
        flags = [f"-ldflags={ldflags(tool, module.released)}"]
        packages = sorted(set(tool.packages.values()))
        # go test runs vet first: a check of the source, nothing the binary needs.
        verb = ["test", "-c", "-vet=off"] if tool.test_binary else ["build"]
        if tool.build_module is not None:
            cwd = prepare_build_module(tool, module, go, env, log, progress)
            argv = [go, *verb, *flags, "-o", f"{tmp}/", *packages]
        elif tool.from_source or tool.patches or tool.test_binary:
            copy_module(module.dir, src, tool.patches, tool.label)
            cwd = src
            rel = ["./" + p[len(tool.module):].lstrip("/") for p in packages]
            argv = [go, *verb, *flags, "-o", f"{tmp}/", *rel]
        else:
            env["GOBIN"] = str(tmp)
            cwd = cache_dir() / "go"
            argv = [go, "install", *flags, *(f"{p}@{tool.version}" for p in packages)]
        run_logged(argv, cwd=cwd, env=env, log=log, timeout=TIMEOUTS.go_build,
                   what=f"building {tool.label}", poll=_link_reporter(tool, tmp, progress))
        seconds = round(time.monotonic() - start, 1)
        for link, exe in tool.binaries().items():
            if not (tmp / exe.name).is_file():
                raise GoBuildError(f"building {tool.label}: go succeeded but wrote no "
                                   f"{exe.name} ({link})\nfull log: {log}", log)
        put_in_place(tmp, target, {**stamp_identity(tool),
                                   "go": ".".join(map(str, go_version(go))),
                                   "build_seconds": seconds, "log": str(log)})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(src, ignore_errors=True)
    return seconds


def put_in_place(tmp: Path, target: Path, stamp: dict[str, Any]) -> None:
    """A finished build in ``tmp`` becomes ``target``, its stamp (with the build time)
    written first, so a half-written build is never taken for a cached one."""
    stamp = {**stamp, "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (tmp / ".stamp.json").write_text(json.dumps(stamp, indent=2) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)


def _link_reporter(tool: GoTool, tmp: Path, progress: Progress) -> Callable[[], None]:
    """A poll that reports each binary once it is in place (its size unchanged since the
    last poll): a long build shows how far it got."""
    start = time.monotonic()
    sizes: dict[str, int] = {}
    done: set[str] = set()

    def poll() -> None:
        for link, exe in tool.binaries().items():
            try:
                size = (tmp / exe.name).stat().st_size
            except OSError:
                continue
            if link not in done and sizes.get(link) == size:
                done.add(link)
                progress(f"{tool.label}: {link} linked after {time.monotonic() - start:.0f}s "
                         f"({size / 2**20:.0f} MiB)")
            sizes[link] = size

    return poll


@dataclass(frozen=True)
class Module:
    """A module version in the module cache."""

    dir: Path
    gomod: str
    released: str | None
    """Publication time on the module proxy."""


def download(go: str, env: Mapping[str, str], module: str, version: str, log: Path) -> Module:
    """``module@version`` into the module cache (a no-op when it is there)."""
    argv = [go, "mod", "download", "-json", f"{module}@{version}"]
    where = cache_dir() / "go"
    where.mkdir(parents=True, exist_ok=True)  # outside any module, so no go.mod interferes
    proc = run(argv, timeout=TIMEOUTS.go_module, env=env, check=False, cwd=where)
    with open(log, "a") as fh:
        fh.write(f"\n$ {shlex.join(argv)}\n{proc.stdout}{proc.stderr}# exit {proc.returncode}\n")
    try:
        info = json.loads(proc.stdout or "{}")
    except ValueError:
        info = {}
    if proc.returncode != 0 or info.get("Error") or not info.get("Dir") or not info.get("GoMod"):
        detail = info.get("Error") or (proc.stderr or proc.stdout).strip()
        raise GoBuildError(f"downloading {module}@{version} failed: {detail}\n(is the Go module "
                           f"proxy reachable? GOPROXY={env.get('GOPROXY') or 'default'})\n"
                           f"full log: {log}", log)
    released = None
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        released = json.loads(Path(info["Info"]).read_text())["Time"]
    return Module(Path(info["Dir"]), Path(info["GoMod"]).read_text(), released)


def copy_module(module_dir: Path, dest: Path, patches: Sequence[SourcePatch], label: str) -> None:
    """A private copy of a module from the module cache, with ``patches`` applied.

    Files are hard links into the module cache where possible (cheap); a patched file is
    replaced by a new file, never written through its link, so the cache stays intact.
    """
    shutil.rmtree(dest, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(module_dir, dest, copy_function=link_or_copy, symlinks=True)
    for root, _dirs, _files in os.walk(dest):
        os.chmod(root, 0o755)  # the directories are new; the linked files keep their mode
    for patch in patches:
        path = dest / patch.path
        text = path.read_text()
        found = text.count(patch.old)
        if found != 1:
            raise ComponentError(
                f"cannot apply the build patch to {label}/{patch.path}: expected the line "
                f"once, found it {found} times ({patch.why}); the pin changed: update the "
                "patch or the pinned version"
            )
        path.unlink()
        path.write_text(text.replace(patch.old, patch.new))


def render_tools_go(packages: Sequence[str]) -> str:
    """Blank imports that make ``go mod tidy`` keep every module the commands need."""
    imports = "\n".join(f'\t_ "{p}"' for p in sorted(set(packages)))
    return f"//go:build tools\n\npackage tools\n\nimport (\n{imports}\n)\n"


_IMPORT_BLOCK = re.compile(r"^import\s*\((.*?)^\)", re.MULTILINE | re.DOTALL)
_IMPORT_LINE = re.compile(r"^import\s+(?:[\w.]+\s+)?\"([^\"]+)\"", re.MULTILINE)
_QUOTED = re.compile(r"^\s*(?:[\w.]+\s+)?\"([^\"]+)\"", re.MULTILINE)


def imports_of_tests(module: Module, module_path: str, packages: Sequence[str]) -> list[str]:
    """The non-standard imports of the packages' ``_test.go`` files. ``go mod tidy`` in a
    build module keeps what a dependency's package needs, not what its tests import, and a
    test binary (Kubernetes' e2e.test registers every spec in e2e_test.go) needs both."""
    found: set[str] = set()
    for package in packages:
        folder = module.dir / package[len(module_path):].lstrip("/")
        for test_file in sorted(folder.glob("*_test.go")):
            text = test_file.read_text(errors="replace")
            quoted = _IMPORT_LINE.findall(text)
            for block in _IMPORT_BLOCK.findall(text):
                quoted += _QUOTED.findall(block)
            found.update(q for q in quoted if "." in q.split("/", 1)[0])
    return sorted(found)


def prepare_build_module(tool: GoTool, module: Module, go: str, env: Mapping[str, str],
                         log: Path, progress: Progress) -> Path:
    """The tool's generated build module, tidied; tidy runs again only when it changed."""
    assert tool.build_module is not None
    work = cache_dir() / "go" / "work" / tool.label
    work.mkdir(parents=True, exist_ok=True)
    gomod = tool.build_module.render(module.gomod, tool.version)
    packages = list(tool.packages.values())
    if tool.test_binary:
        packages += imports_of_tests(module, tool.module, packages)
    tools = render_tools_go(packages)
    marker = work / "go.mod.generated"
    if (work / "go.sum").is_file() and _read(marker) == gomod and _read(work / "tools.go") == tools:
        return work
    progress(f"{tool.label}: preparing the build module in {work} (go mod tidy; the first "
             "time this downloads the modules)")
    marker.unlink(missing_ok=True)
    (work / "go.sum").unlink(missing_ok=True)
    (work / "go.mod").write_text(gomod)
    (work / "tools.go").write_text(tools)
    run_logged([go, "mod", "tidy"], cwd=work, env=env, log=log, timeout=TIMEOUTS.go_module,
               what=f"{tool.label}: go mod tidy")
    marker.write_text(gomod)
    return work


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def log_tail(log: Path, lines: int = LOG_TAIL_LINES) -> str:
    text = _read(log) or ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def run_logged(argv: list[str], *, cwd: Path, env: Mapping[str, str], log: Path,
               timeout: float, what: str, poll: Callable[[], None] | None = None) -> None:
    """Run a go command with its output appended to ``log``; GoBuildError on failure.

    The command runs in its own process group, killed with its children when the wait
    ends early (timeout, Ctrl-C).
    """
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

        def exited() -> int | None:
            rc = proc.poll()
            if rc is None and poll is not None:
                poll()
            return rc

        try:
            rc = wait_until(exited, timeout, f"{what}: `{' '.join(argv[:3])} ...`",
                            interval=TIMEOUTS.slow_poll,
                            state=lambda: f"{log_tail(log)}\nfull log: {log}")
        except WaitTimeout as exc:
            raise GoBuildError(str(exc), log) from None
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        fh.write(f"# exit {rc} after {time.monotonic() - start:.1f}s\n")
    if rc != 0:
        raise GoBuildError(f"{what} failed: `{' '.join(argv[:3])} ...` exited {rc}\n"
                           f"{log_tail(log)}\nfull log: {log}", log)
