"""The signed attestation of a certification bundle: an in-toto Statement in a DSSE envelope.

SHA256SUMS shows that a bundle is whole, not who made it: whoever changes a verdict can
run sha256sum again. ``certify --sign-key`` therefore adds ``attestation.intoto.jsonl``,
one line holding a DSSE envelope (the file shape in-toto and SLSA tools read) whose
payload is an in-toto Statement v1:

- ``subject``: every other file of the bundle, SHA256SUMS included, by relative path and
  SHA-256; so a file added, removed or changed after signing is found by name;
- ``predicateType`` PREDICATE_TYPE, ``predicate``: what was certified (the verdict of each
  node × class, the selection, the runtimes), by what (sandcheck's version, the catalog's
  digest), where (the cluster's name, uid, server, node fingerprints) and when (the run's
  start and end), so a verifier can say what it verified without trusting another file.

The signature is over DSSE's PAE(payloadType, payload), not over the JSON, so any DSSE
verifier (in-toto, cosign, openssl on the PAE bytes) checks it. verify_attestation checks
in an order that makes each way of tampering fail with its own line: the signer, the
signature, the statement, that it is this bundle's, files added or removed, verdicts that
disagree with the results, files changed.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sandcheck import __version__
from sandcheck.reports.bundle import (
    ATTESTATION,
    CATALOG_DIGEST,
    CERTIFICATION,
    CLUSTER,
    MANIFEST,
    REQUIRED,
    RUN_FINISHED,
    RUN_STARTED,
    certification,
    sha256,
    verify_bundle,
)
from sandcheck.reports.results import Results

if TYPE_CHECKING:
    from sandcheck.reports.signing import PublicKey, SigningKey

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://sandcheck.dev/certification/v1"
"""Versioned: a predicate whose fields change meaning gets a new version."""
CLUSTER_KEYS = ("backend", "kubernetes", "cluster", "cluster_uid", "server",
                "node_fingerprints")
CELL_KEYS = ("node", "runtime_class", "verdict", "failing_checks")


class Refused(Exception):
    """The attestation does not vouch for this bundle; the message is one line naming why.
    ``unsigned``: there is no attestation at all."""

    def __init__(self, line: str, unsigned: bool = False):
        super().__init__(line)
        self.unsigned = unsigned


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding, the bytes a signature is over."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


def bundle_files(bundle: Path) -> dict[str, Path]:
    """Every file of the bundle but the attestation, by its relative path."""
    return {p.relative_to(bundle).as_posix(): p for p in sorted(bundle.rglob("*"))
            if p.is_file() and p.relative_to(bundle).as_posix() != ATTESTATION}


def _cells(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: c.get(k) for k in CELL_KEYS} for c in cells]


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def predicate(bundle: Path) -> dict[str, Any]:
    """What the attestation certifies, from the bundle's certification.json, cluster.json
    and results.json."""
    cert = _read_json(bundle / CERTIFICATION)
    cluster = _read_json(bundle / CLUSTER)
    env = Results.read(bundle / "results.json").environment
    chosen = str(env.get("runtimes_selected") or "")
    return {
        "verdict": cert["verdict"],
        "cells": _cells(cert["cells"]),
        "selection": cert["selection"],
        "runtimes": [r.strip() for r in chosen.split(",") if r.strip()],
        "sandcheck_version": __version__,
        "catalog_sha256": env.get(CATALOG_DIGEST),
        "cluster": {k: cluster.get(k) for k in CLUSTER_KEYS},
        "started": env.get(RUN_STARTED),
        "finished": env.get(RUN_FINISHED),
    }


def statement(bundle: Path) -> dict[str, Any]:
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": sha256(path)}}
                    for name, path in bundle_files(bundle).items()],
        "predicateType": PREDICATE_TYPE,
        "predicate": predicate(bundle),
    }


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def sign_bundle(bundle: Path, key: SigningKey) -> Path:
    """Write the bundle's attestation, signed by ``key``; its manifest must be written."""
    payload = json.dumps(statement(bundle), sort_keys=True, separators=(",", ":")).encode()
    envelope = {"payloadType": PAYLOAD_TYPE, "payload": _b64(payload),
                "signatures": [{"keyid": key.keyid,
                                "sig": _b64(key.sign(pae(PAYLOAD_TYPE, payload)))}]}
    path = bundle / ATTESTATION
    path.write_text(json.dumps(envelope, separators=(",", ":")) + "\n")
    return path


@dataclass
class Attested:
    """What a verified attestation says, for the verifier's report."""

    keyid: str
    kind: str
    predicate: dict[str, Any]
    subjects: int

    def lines(self) -> list[str]:
        p = self.predicate
        cells = p.get("cells") or []
        nodes = sorted({c["node"] for c in cells})
        classes = sorted({c["runtime_class"] for c in cells})
        counts = Counter(c["verdict"] for c in cells)
        shown = ", ".join(nodes[:5]) + (f" and {len(nodes) - 5} more" if len(nodes) > 5
                                        else "")
        failing = [f"{c['node']} × {c['runtime_class']}" for c in cells
                   if c["verdict"] == "fail"]
        cluster = p.get("cluster") or {}
        uid = cluster.get("cluster_uid")
        where = [v for v in (cluster.get("cluster"), uid and f"uid {uid}",
                             cluster.get("server")) if v]
        selection = p.get("selection") or {}
        return [
            f"signature good: signed by key {self.keyid} ({self.kind})",
            f"certified: {p.get('verdict')} for runtime classes {', '.join(classes)} on "
            f"{len(nodes)} node(s) ({shown}): "
            + ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))
            + (f"; failing {', '.join(failing[:5])}" if failing else ""),
            f"cluster {', '.join(map(str, where)) or 'unnamed'}; run {p.get('started')} to "
            f"{p.get('finished')}",
            f"selection version {selection.get('version')} "
            f"({', '.join(selection.get('suites') or [])}), sandcheck "
            f"{p.get('sandcheck_version')}, catalog sha256 {p.get('catalog_sha256')}",
            f"all {self.subjects} files of the bundle are the signed ones",
        ]


def _envelope(bundle: Path) -> dict[str, Any]:
    path = bundle / ATTESTATION
    if not path.is_file():
        raise Refused(f"{bundle} holds no {ATTESTATION}: it is not signed, so its origin "
                      "cannot be checked (`sandcheck certify --sign-key KEY` signs a "
                      "bundle)", unsigned=True)
    try:
        envelope = json.loads(path.read_text())
        payload = base64.b64decode(envelope["payload"], validate=True)
        signatures = [(s.get("keyid"), base64.b64decode(s["sig"], validate=True))
                      for s in envelope["signatures"]]
        payload_type = envelope["payloadType"]
        if not isinstance(payload_type, str):
            raise TypeError(payload_type)
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error,
            UnicodeDecodeError):
        raise Refused(f"{ATTESTATION}: not a DSSE envelope (payloadType, payload, "
                      "signatures)") from None
    return {"payload": payload, "signatures": signatures, "payloadType": payload_type}


def _signed_statement(envelope: dict[str, Any], public: PublicKey) -> dict[str, Any]:
    """The statement, once a signature of ``public`` over it checks; signatures without a
    keyid are tried too (DSSE makes the keyid optional)."""
    mine = [sig for keyid, sig in envelope["signatures"] if keyid in (public.keyid, None, "")]
    if not mine:
        others = ", ".join(str(k) for k, _ in envelope["signatures"]) or "none"
        raise Refused(f"{ATTESTATION}: signed by another key (keyid {others}), not by "
                      f"{public.source} (keyid {public.keyid})")
    signed = pae(envelope["payloadType"], envelope["payload"])
    if not any(public.verify(sig, signed) for sig in mine):
        raise Refused(f"{ATTESTATION}: the signature does not verify with {public.source}: "
                      "the payload or the signature was altered after signing")
    if envelope["payloadType"] != PAYLOAD_TYPE:
        raise Refused(f"{ATTESTATION}: payloadType {envelope['payloadType']!r} is not "
                      f"{PAYLOAD_TYPE}")
    try:
        stmt = json.loads(envelope["payload"])
        kind, subjects = stmt["_type"], stmt["subject"]
        names = [s["name"] for s in subjects]
        digests = [s["digest"]["sha256"] for s in subjects]
        pred = stmt["predicate"]
    except (ValueError, KeyError, TypeError):
        raise Refused(f"{ATTESTATION}: the signed payload is no in-toto Statement") from None
    if kind != STATEMENT_TYPE or stmt.get("predicateType") != PREDICATE_TYPE \
            or not isinstance(pred, dict):
        raise Refused(f"{ATTESTATION}: a {stmt.get('predicateType')!r} statement, not a "
                      f"sandcheck certification ({PREDICATE_TYPE}); a newer sandcheck may "
                      "read it")
    if len(set(names)) != len(names) or not all(isinstance(d, str) for d in digests):
        raise Refused(f"{ATTESTATION}: its subjects name a file twice or lack digests")
    return stmt


def _identity(pred: dict[str, Any]) -> str:
    cluster = pred.get("cluster") or {}
    nodes = sorted(cluster.get("node_fingerprints") or {})
    return (f"cluster {cluster.get('cluster_uid') or cluster.get('cluster')} "
            f"(nodes {', '.join(nodes[:3]) or '-'}{'...' if len(nodes) > 3 else ''}), "
            f"run started {pred.get('started')}")


def _check_this_bundle(bundle: Path, pred: dict[str, Any]) -> None:
    """The attestation was made for this bundle: the cluster and run it names are the
    ones cluster.json and results.json name (files that are missing or unreadable are
    left to the subject checks to name)."""
    try:
        cluster = _read_json(bundle / CLUSTER)
        env = Results.read(bundle / "results.json").environment
    except (OSError, ValueError, TypeError):
        return
    here = {"cluster": {k: cluster.get(k) for k in CLUSTER_KEYS},
            "started": env.get(RUN_STARTED), "finished": env.get(RUN_FINISHED)}
    if any(pred.get(k) != v for k, v in here.items()):
        raise Refused(f"{ATTESTATION}: the attestation of another bundle: it certifies "
                      f"{_identity(pred)}; this bundle is {_identity(here)}")


def _said(cell: dict[str, Any] | None) -> str:
    if cell is None:
        return "no such cell"
    failing = cell.get("failing_checks") or []
    return cell["verdict"] + (f" ({', '.join(failing)})" if failing else "")


def _verdict_change(bundle: Path, pred: dict[str, Any]) -> str | None:
    """Where the bundle's verdicts (recomputed from results.json, and certification.json)
    differ from the signed ones, or None (also when results.json cannot be read: the
    digest checks name it)."""
    try:
        recomputed = certification(Results.read(bundle / "results.json"),
                                   pred.get("selection") or {})
        written = _read_json(bundle / CERTIFICATION)
        cells_written = {(c["node"], c["runtime_class"]): c for c in _cells(written["cells"])}
    except (OSError, ValueError, TypeError, KeyError):
        return None
    signed = {(c["node"], c["runtime_class"]): c for c in _cells(pred.get("cells") or [])}
    ours = {(c["node"], c["runtime_class"]): c for c in _cells(recomputed["cells"])}
    for cell in sorted(set(signed) | set(ours) | set(cells_written)):
        s, r, w = (signed.get(cell), ours.get(cell), cells_written.get(cell))
        if s == r == w:
            continue
        return (f"verdict of {cell[0]} × {cell[1]}: the signed attestation says "
                f"{_said(s)}, the bundle's results.json gives {_said(r)} and its "
                f"{CERTIFICATION} says {_said(w)}: changed after signing")
    if not pred.get("verdict") == recomputed["verdict"] == written.get("verdict"):
        return (f"overall verdict: the signed attestation says {pred.get('verdict')}, the "
                f"bundle's results.json gives {recomputed['verdict']} and its "
                f"{CERTIFICATION} says {written.get('verdict')}: changed after signing")
    return None


def _check_subjects(bundle: Path, stmt: dict[str, Any]) -> int:
    """Every file of the bundle is a subject with its signed digest, and every subject a
    file; the number of files."""
    signed = {s["name"]: s["digest"]["sha256"] for s in stmt["subject"]}
    present = bundle_files(bundle)
    uncovered = [n for n in (*REQUIRED, MANIFEST) if n not in signed]
    if uncovered:
        raise Refused(f"{ATTESTATION}: does not cover a whole bundle: "
                      f"{', '.join(uncovered)} not among its subjects")
    removed = sorted(set(signed) - set(present))
    if removed:
        raise Refused(f"{', '.join(removed)}: removed after signing (a subject of the "
                      "attestation, missing from the bundle)")
    added = sorted(set(present) - set(signed))
    if added:
        raise Refused(f"{', '.join(added)}: added after signing (in the bundle, not a "
                      "subject of the attestation)")
    flipped = _verdict_change(bundle, stmt["predicate"])
    if flipped:
        raise Refused(flipped)
    changed = [n for n, path in present.items() if sha256(path) != signed[n]]
    others = [n for n in changed if n != MANIFEST]
    if others and MANIFEST in changed and not verify_bundle(bundle):
        raise Refused(f"{MANIFEST}: re-made after {', '.join(others)} changed: they match "
                      f"{MANIFEST}, but not the signed attestation")
    if changed:
        raise Refused(f"{', '.join(changed)}: changed after signing (SHA-256 differs from "
                      "the attestation's subject)")
    return len(present)


def verify_attestation(bundle: Path, public: PublicKey) -> Attested:
    """Check the bundle's attestation against ``public``; Refused with one line when it
    does not vouch for this bundle exactly as it is."""
    stmt = _signed_statement(_envelope(bundle), public)
    _check_this_bundle(bundle, stmt["predicate"])
    files = _check_subjects(bundle, stmt)
    return Attested(public.keyid, public.kind, stmt["predicate"], files)
