"""The cargo build engine: a pinned ``CargoTool`` in, its binaries in the cache out, once.

The counterpart of gobuild.py for crates.io: a build is reused while its stamp
(``bin/LABEL/.stamp.json``) names the same crate, version and features and every binary is
there (checking needs neither cargo nor the network); concurrent runs build once (a flock).
The build is ``cargo install CRATE --version V --locked --no-default-features --features
...`` with the lock file the crate was published with, into a private root that replaces
``bin/LABEL`` when it is complete. The user's cargo home (``$CARGO_HOME``: crates.io's
index and crate downloads, any registry mirror configured there) is used as it is; the
compiled dependencies stay in sandcheck's cache.

Layout under ``cache_dir()``:
  cargo/target      CARGO_TARGET_DIR, shared by every cargo build (a rebuild is incremental)
  bin/LABEL         the binaries and the stamp
  logs/LABEL.log    the output of the last build's cargo command
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sandcheck.errors import ComponentError, UserError
from sandcheck.host.command import run
from sandcheck.progress import Progress
from sandcheck.provision.apt import apt_install
from sandcheck.provision.command import STDERR
from sandcheck.provision.gobuild import build_once, cached_as, put_in_place, run_logged
from sandcheck.provision.paths import cache_dir
from sandcheck.provision.pins import RUST_MIN
from sandcheck.provision.tools import CargoTool
from sandcheck.timeouts import TIMEOUTS

CARGO_FALLBACKS = ("~/.cargo/bin/cargo",)
RUSTUP_HINT = ("install a current Rust with rustup (https://rustup.rs: "
               "`curl --proto '=https' -sSf https://sh.rustup.rs | sh`) and put cargo on PATH")
COMPILED_EVERY = 25
"""A long build reports each time this many more crates are compiled."""


def find_cargo() -> str:
    """cargo on PATH (or rustup's default place), new enough for the pinned crates."""
    cargo = shutil.which("cargo") or next(
        (p for p in map(os.path.expanduser, CARGO_FALLBACKS) if os.access(p, os.X_OK)), None)
    if cargo is None:
        raise UserError(f"cargo not found: {RUSTUP_HINT} (Debian 12's cargo is too old)")
    have = rust_version(cargo)
    if have < RUST_MIN:
        raise UserError(f"{cargo} is Rust {have[0]}.{have[1]}; the pinned crates need Rust "
                        f">= {RUST_MIN[0]}.{RUST_MIN[1]}: {RUSTUP_HINT}")
    return cargo


def rust_version(cargo: str) -> tuple[int, int]:
    out = run([cargo, "--version"], timeout=TIMEOUTS.tool_query).stdout
    m = re.search(r"cargo (\d+)\.(\d+)", out)
    if not m:
        raise ComponentError(f"cannot read the Rust version from `{cargo} --version`: {out!r}")
    return int(m.group(1)), int(m.group(2))


def stamp_identity(tool: CargoTool) -> dict[str, Any]:
    """What a cached build must have been built from."""
    return {"crate": tool.crate, "version": tool.version, "features": sorted(tool.features),
            "default_features": False, "locked": True}


def cached(tool: CargoTool) -> dict[str, Path] | None:
    """The tool's binaries when its stamp matches and every one is there; else None."""
    return cached_as(tool, stamp_identity(tool))


def install_argv(cargo: str, tool: CargoTool, root: Path) -> list[str]:
    return [cargo, "install", tool.crate, "--version", tool.version, "--locked",
            "--no-default-features", "--features", ",".join(tool.features),
            "--root", str(root)]


def cargo_env() -> dict[str, str]:
    """The inherited environment with sandcheck's target dir; no cross-compilation or
    incremental settings of the caller."""
    env = dict(os.environ)
    env["CARGO_TARGET_DIR"] = str(cache_dir() / "cargo" / "target")
    for name in ("CARGO_BUILD_TARGET", "CARGO_INSTALL_ROOT", "CARGO_INCREMENTAL"):
        env.pop(name, None)
    return env


def build(tool: CargoTool, progress: Progress = STDERR) -> dict[str, Path]:
    """Build (once) the tool's crate into ``tool.target()``; returns binary name -> path.
    The build dependencies are installed only when it is built."""

    def make() -> float:
        apt_install(tool.apt_build_deps, progress)
        return _build_into(tool, tool.target(), find_cargo(), progress)

    return build_once(tool, lambda: cached(tool), make, progress)


def _build_into(tool: CargoTool, target: Path, cargo: str, progress: Progress) -> float:
    log = cache_dir() / "logs" / f"{tool.label}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    features = ",".join(tool.features)
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    log.write_text(f"# {tool.label}: crate {tool.crate} {tool.version}, features {features} "
                   f"({when})\n")
    progress(f"{tool.label}: cargo install {tool.crate} {tool.version} (features {features}); "
             f"this takes minutes once (log: {log})")
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    start = time.monotonic()
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        run_logged(install_argv(cargo, tool, tmp), cwd=cache_dir(), env=cargo_env(), log=log,
                   timeout=TIMEOUTS.cargo_build, what=f"building {tool.label}",
                   poll=_compile_reporter(tool, log, progress))
        seconds = round(time.monotonic() - start, 1)
        for name in tool.executables:
            built = tmp / "bin" / name
            if not built.is_file():
                raise ComponentError(f"building {tool.label}: cargo succeeded but installed no "
                                     f"{name}\nfull log: {log}")
            os.replace(built, tmp / name)
        shutil.rmtree(tmp / "bin", ignore_errors=True)
        for name in (".crates.toml", ".crates2.json"):  # cargo's own records of the root
            (tmp / name).unlink(missing_ok=True)
        put_in_place(tmp, target, {**stamp_identity(tool),
                                   "rust": ".".join(map(str, rust_version(cargo))),
                                   "build_seconds": seconds, "log": str(log)})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return seconds


def _compile_reporter(tool: CargoTool, log: Path, progress: Progress) -> Callable[[], None]:
    """A poll that says how many crates cargo has compiled, every COMPILED_EVERY more."""
    start = time.monotonic()
    said = [0]

    def poll() -> None:
        try:
            count = log.read_text(errors="replace").count("Compiling ")
        except OSError:
            return
        if count >= said[0] + COMPILED_EVERY:
            said[0] = count
            progress(f"{tool.label}: {count} crates compiled after "
                     f"{time.monotonic() - start:.0f}s")

    return poll
