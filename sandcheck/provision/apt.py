"""Debian packages: installed only when missing, with a message that says how by hand."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path

from sandcheck.errors import UserError
from sandcheck.host.command import run
from sandcheck.progress import Progress
from sandcheck.provision.command import STDERR
from sandcheck.timeouts import TIMEOUTS


def dpkg_installed(package: str) -> bool:
    if shutil.which("dpkg-query") is None:
        return False
    proc = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True,
                          text=True, timeout=TIMEOUTS.command)
    return proc.returncode == 0 and proc.stdout.strip().endswith(" installed")


def _has_candidate(package: str, env: Mapping[str, str]) -> bool:
    proc = run(["apt-cache", "policy", package], timeout=TIMEOUTS.command, env=env, check=False)
    m = re.search(r"Candidate:\s*(\S+)", proc.stdout)
    return bool(m) and m.group(1) != "(none)"


def apt_install(packages: Iterable[str], progress: Progress = STDERR) -> list[str]:
    """Install the Debian packages that are missing; returns those installed now."""
    wanted = list(dict.fromkeys(packages))
    missing = [p for p in wanted if not dpkg_installed(p)]
    if not missing:
        if wanted:
            progress(f"apt packages present ({', '.join(wanted)})")
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
    if not all(_has_candidate(p, env) for p in missing):
        progress("apt-get update")
        run(["apt-get", "update"], timeout=TIMEOUTS.apt, env=env)
        unknown = [p for p in missing if not _has_candidate(p, env)]
        if unknown:
            raise UserError(
                f"apt knows no package {', '.join(unknown)} on this host: "
                "check the package names and the apt sources"
            )
    progress(f"apt-get install {' '.join(missing)}")
    run(["apt-get", "install", "-y", "--no-install-recommends", *missing], timeout=TIMEOUTS.apt,
        env=env)
    return missing


def apt_unpack(package: str, dest: Path, progress: Progress = STDERR) -> Path:
    """A Debian package's files unpacked into ``dest`` (``apt-get download``, then
    ``dpkg-deb -x``), never installed: for a package that conflicts with one the host needs
    (Debian's busybox beside busybox-static). Done once; returns ``dest``."""
    done = dest / ".unpacked"
    if done.is_file():
        return dest
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise UserError(f"unpacking the Debian package {package} needs {tool}: this "
                            "host has none (a Debian or Ubuntu host has both)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if not _has_candidate(package, env):
        progress("apt-get update")
        run(["apt-get", "update"], timeout=TIMEOUTS.apt, env=env)
    debs = dest.parent / f".{dest.name}.download"
    shutil.rmtree(debs, ignore_errors=True)
    debs.mkdir(parents=True)
    try:
        progress(f"apt-get download {package} (unpacked into {dest}, not installed)")
        run(["apt-get", "download", package], timeout=TIMEOUTS.apt, env=env, cwd=debs)
        (deb,) = debs.glob("*.deb")
        shutil.rmtree(dest, ignore_errors=True)
        run(["dpkg-deb", "-x", str(deb), str(dest)], timeout=TIMEOUTS.command)
        done.write_text(deb.name + "\n")
    finally:
        shutil.rmtree(debs, ignore_errors=True)
    return dest
