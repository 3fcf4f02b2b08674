"""Bundles of certify shards merged into one (``sandcheck merge-bundles OUT BUNDLE...``).

Certify processes with disjoint ``--nodes`` selectors can run against one cluster at once;
each writes a bundle of its nodes. Their merge is the bundle one run over all those nodes
would have written: every input must verify first (an input changed after its run is not
merged), all must be of one selection (the whole selection of certification.json), one
runtime selection, one catalog (its digest, where recorded) and one cluster (its
kube-system uid, else its server and version), and no node may be in two of them. OUT
then holds the merged results.json, report.html and summary.md made from it, junit.xml
with every input's testsuite, certification.json recomputed from the merged results,
cluster.json with every node's fingerprint, a SHA256SUMS over all of it, and with
``--sign-key`` an attestation of its own (an input's attestation signed that input only).

Checks that belong to no node (the RuntimeClass suite's cluster-wide checks) ran in every
shard: the merged results keep one per check, the worst outcome of the shards, so a
failure anywhere stays a failure.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sandcheck.errors import UserError
from sandcheck.reports.attestation import sign_bundle
from sandcheck.reports.bundle import (
    CATALOG_DIGEST,
    CERTIFICATION,
    CLUSTER,
    RUN_FINISHED,
    RUN_STARTED,
    cluster_identity,
    finish_bundle,
    verify_bundle,
)
from sandcheck.reports.junit import merge_files
from sandcheck.reports.render import write_reports
from sandcheck.reports.results import Check, Results

if TYPE_CHECKING:
    from sandcheck.reports.signing import SigningKey

WORST_FIRST = ("error", "failed", "deviation", "passed", "skipped")
UNION_KEYS = ("node_fingerprints", "fleet_cells", "handlers_verified", "handlers_missing")
_SHARD_KEYS = ("node_selection", "api_requests", "fleet_start_seconds", "node_parallelism",
               "pid", "resumed")


def _runtimes(results: Results) -> list[str]:
    chosen = results.environment.get("runtimes_selected") or ""
    return sorted({r.strip() for r in str(chosen).split(",") if r.strip()})


def nodes_of(results: Results) -> set[str]:
    return {c.node for c in results.checks if c.node}


class Shard:
    """One input bundle, read after it verified."""

    def __init__(self, path: Path):
        self.path = Path(path)
        problems = verify_bundle(self.path)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise UserError(f"{self.path} does not verify: {problems[0]}{more}; only intact "
                            "bundles are merged")
        self.certification = json.loads((self.path / CERTIFICATION).read_text())
        self.cluster = json.loads((self.path / CLUSTER).read_text())
        self.results = Results.read(self.path / "results.json")
        self.nodes = nodes_of(self.results)

    @property
    def label(self) -> str:
        selector = self.results.environment.get("node_selection")
        return f"{self.path.name} (--nodes {selector})" if selector else self.path.name


def check_compatible(shards: list[Shard]) -> None:
    """UserError naming the first thing the shards do not share."""
    first = shards[0]
    for shard in shards[1:]:
        for what, mine, theirs in (
                ("selection", first.certification.get("selection"),
                 shard.certification.get("selection")),
                ("runtimes", _runtimes(first.results), _runtimes(shard.results)),
                ("catalog", first.results.environment.get(CATALOG_DIGEST),
                 shard.results.environment.get(CATALOG_DIGEST)),
                ("cluster", cluster_identity(first.cluster), cluster_identity(shard.cluster))):
            if mine != theirs:
                raise UserError(f"{shard.path} and {first.path} differ in {what} ({theirs} vs "
                                f"{mine}): only shards of one certification of one cluster "
                                "merge")
    owners: dict[str, list[str]] = {}
    for shard in shards:
        for node in shard.nodes:
            owners.setdefault(node, []).append(str(shard.path))
    shared = sorted(n for n, where in owners.items() if len(where) > 1)
    if shared:
        shown = ", ".join(f"{n} (in {' and '.join(owners[n])})" for n in shared[:5])
        more = f" and {len(shared) - 5} more" if len(shared) > 5 else ""
        raise UserError(f"the bundles overlap on node(s) {shown}{more}: shards must select "
                        "disjoint nodes (--nodes)")
    if not any(shard.nodes for shard in shards):
        raise UserError("none of the bundles has a node × class check (made with --nodes?)")


def _worst(checks: list[Check]) -> Check:
    return min(checks, key=lambda c: WORST_FIRST.index(c.status)
               if c.status in WORST_FIRST else 0)


def merged_results(shards: list[Shard]) -> Results:
    """One Results of every shard (pure over the shards' results)."""
    merged = Results(environment=dict(shards[0].results.environment))
    clusterwide: dict[str, list[Check]] = {}
    for shard in shards:
        if shard is not shards[0]:
            merged.merge(Results(environment=shard.results.environment))
        for check in shard.results.checks:
            if check.node:
                merged.checks.append(check)
            else:
                clusterwide.setdefault(check.nodeid or check.id + str(check.runtime),
                                       []).append(check)
        merged.metrics.extend(shard.results.metrics)
    merged.checks[:0] = [_worst(same) for same in clusterwide.values()]
    env = merged.environment
    for key in UNION_KEYS:
        joined: dict[str, Any] = {}
        for shard in shards:
            value = shard.results.environment.get(key)
            if isinstance(value, dict):
                joined.update(value)
        if joined:
            env[key] = joined
    for key, pick in ((RUN_STARTED, min), (RUN_FINISHED, max)):
        stamps = [s.results.environment[key] for s in shards if s.results.environment.get(key)]
        if stamps:
            env[key] = pick(stamps)  # ISO 8601 UTC: text order is time order
    env["node_selection"] = " ; ".join(
        str(s.results.environment.get("node_selection")) for s in shards)
    env["shards"] = [{"bundle": s.path.name, "nodes": len(s.nodes),
                      **{k: s.results.environment[k] for k in _SHARD_KEYS
                         if k in s.results.environment}} for s in shards]
    for key in _SHARD_KEYS:
        if key != "node_selection":
            env.pop(key, None)
    return merged


def merge_bundles(out: Path, inputs: list[Path], signer: SigningKey | None = None
                  ) -> dict[str, Any]:
    """Write the merged bundle to ``out`` (absent or empty), signed by ``signer`` when
    given; its certification. An input's attestation is never carried over: it signed
    that input, not the merge."""
    out = Path(out)
    if len(inputs) < 2:
        raise UserError("merge-bundles needs two bundles or more")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} is not empty: the merged bundle goes to a new directory")
    shards = [Shard(Path(p)) for p in inputs]
    check_compatible(shards)
    results = merged_results(shards)
    write_reports(results, out)
    merge_files([s.path / "junit.xml" for s in shards], [s.label for s in shards],
                out / "junit.xml")
    cert = finish_bundle(out, shards[0].certification["selection"])
    if signer is not None:
        sign_bundle(out, signer)
    return cert
