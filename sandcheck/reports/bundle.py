"""A certification bundle: the reports of a certify run, its verdicts and a SHA256SUMS manifest.

What a vendor hands over must be checkable by someone who did not run it: every file of
the bundle is listed in SHA256SUMS (the format ``sha256sum -c`` reads), so a changed,
removed or added file is found by ``sandcheck verify-bundle`` and by coreutils alike.
The manifest proves integrity, not origin: anyone can run sha256sum again. The signed
attestation beside it (attestation.py, written after the manifest and the one file the
manifest does not list) proves who made the bundle.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from pathlib import Path
from typing import Any

from sandcheck.reports.matrix import verdicts
from sandcheck.reports.results import Results

MANIFEST = "SHA256SUMS"
CERTIFICATION = "certification.json"
CLUSTER = "cluster.json"
ATTESTATION = "attestation.intoto.jsonl"
RUN_STARTED, RUN_FINISHED, CATALOG_DIGEST = "run_started", "run_finished", "catalog_sha256"
"""Keys certify adds to results.json's environment: when the run started and ended (UTC,
ISO 8601) and the SHA-256 of the catalog its checks were judged by."""
REQUIRED = ("results.json", "report.html", "summary.md", "junit.xml", CLUSTER, CERTIFICATION)
_CLUSTER_KEYS = ("backend", "backend_level", "kubernetes", "kubernetes_version", "cluster",
                 "cluster_uid", "server", "node_image", "engine", "nodes", "node_handlers",
                 "node_fingerprints", "node_selection", "handlers_verified",
                 "handlers_missing", "shards")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def certification(results: Results, selection: dict[str, Any]) -> dict[str, Any]:
    """The verdict of every node × class, and of the whole run (pass only when no cell
    fails and at least one passes)."""
    cells = [v.to_dict() for v in verdicts(results)]
    failing = [c for c in cells if c["verdict"] == "fail"]
    overall = "fail" if failing or not any(c["verdict"] == "pass" for c in cells) else "pass"
    return {"selection": selection, "verdict": overall, "cells": cells,
            "failing_cells": [f"{c['node']} × {c['runtime_class']}" for c in failing]}


def utc_stamp(moment: datetime.datetime | None = None) -> str:
    """``2026-11-03T10:04:05Z``: a moment (default now) as the bundle records it."""
    moment = moment or datetime.datetime.now(datetime.timezone.utc)
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def stamp_run(bundle: Path, started: str, finished: str, catalog_sha256: str | None) -> None:
    """Record the run's start and end and its catalog's digest in results.json. A resumed
    run started when its first session did (the journal's times, in the environment's
    ``resumed``)."""
    path = bundle / "results.json"
    results = Results.read(path)
    env = results.environment
    starts = [started]
    for session in (env.get("resumed") or {}).get("earlier_sessions") or []:
        try:
            starts.append(utc_stamp(datetime.datetime.strptime(
                str(session.get("started")), "%Y-%m-%dT%H:%M:%S%z")))
        except ValueError:
            continue
    env.update({RUN_STARTED: min(starts), RUN_FINISHED: finished,
                CATALOG_DIGEST: catalog_sha256})
    results.write(path)


def cluster_identity(cluster: dict[str, Any]) -> tuple[str, ...]:
    """What names a cluster in a bundle's cluster.json (pure): its kube-system uid, or
    where that is missing its backend, server, cluster name and version."""
    if cluster.get("cluster_uid"):
        return ("uid", str(cluster["cluster_uid"]))
    return ("api", *(str(cluster.get(k)) for k in ("backend", "server", "cluster",
                                                    "kubernetes")))


def cluster_info(results: Results) -> dict[str, Any]:
    env = results.environment
    return {k: env[k] for k in _CLUSTER_KEYS if k in env}


def write_manifest(bundle: Path) -> Path:
    """SHA256SUMS over every other file of the bundle but its attestation (relative paths,
    sorted)."""
    lines = [f"{sha256(p)}  {p.relative_to(bundle).as_posix()}"
             for p in sorted(bundle.rglob("*")) if p.is_file() and p.name != MANIFEST
             and p.relative_to(bundle).as_posix() != ATTESTATION]
    path = bundle / MANIFEST
    path.write_text("\n".join(lines) + "\n")
    return path


def finish_bundle(bundle: Path, selection: dict[str, Any]) -> dict[str, Any]:
    """Add certification.json and cluster.json to a report dir, then the manifest."""
    results = Results.read(bundle / "results.json")
    cert = certification(results, selection)
    (bundle / CERTIFICATION).write_text(json.dumps(cert, indent=2) + "\n")
    (bundle / CLUSTER).write_text(json.dumps(cluster_info(results), indent=2, default=str)
                                  + "\n")
    write_manifest(bundle)
    return cert


def verify_bundle(bundle: Path) -> list[str]:
    """Problems found (empty: the bundle is intact): each names a file and what is wrong."""
    manifest = bundle / MANIFEST
    if not manifest.is_file():
        return [f"{MANIFEST}: missing (not a sandcheck bundle, or the manifest was removed)"]
    problems: list[str] = []
    listed: dict[str, str] = {}
    for n, line in enumerate(manifest.read_text().splitlines(), 1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or not name or ".." in Path(name).parts \
                or Path(name).is_absolute():
            problems.append(f"{MANIFEST}: line {n} is malformed: {line[:80]!r}")
            continue
        listed[name] = digest
    for name, digest in sorted(listed.items()):
        path = bundle / name
        if not path.is_file():
            problems.append(f"{name}: listed in {MANIFEST} but missing")
        elif sha256(path) != digest:
            problems.append(f"{name}: modified (its SHA-256 differs from {MANIFEST})")
    for path in sorted(bundle.rglob("*")):
        rel = path.relative_to(bundle).as_posix()
        if path.is_file() and path.name != MANIFEST and rel != ATTESTATION \
                and rel not in listed:
            problems.append(f"{rel}: not listed in {MANIFEST} (added after the run)")
    for name in REQUIRED:
        if name not in listed:
            problems.append(f"{name}: a bundle must hold it, and {MANIFEST} does not list it")
    return problems
