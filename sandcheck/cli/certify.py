"""``sandcheck certify``, ``sandcheck verify-bundle`` and ``sandcheck merge-bundles``.

Certify runs a fixed, versioned selection of the bundled suites (isolation, RuntimeClass
and security: escape preconditions and the host syscall surface; never the benchmarks,
whose numbers are no pass/fail) on every selected node × runtime class, through pytest
like ``sandcheck run``, and turns the report dir into a bundle (sandcheck/reports/bundle.py). The
selection changes only with CERTIFY_VERSION, so two bundles of one version certify the
same thing. Other options (``--backend``, ``--runtimes``, ``--kubeconfig``,
``--kind-workers``...) are pytest's and pass through.

A certify run journals each check as it finishes (sandcheck/reports/journal.py); one that
did not end (killed, interrupted) leaves its bundle without a manifest, and
``certify --resume BUNDLE`` with the same options runs only what is missing
(sandcheck/fixtures/resume.py). Shards, certify runs of disjoint ``--nodes`` against one
cluster, are joined by ``merge-bundles`` (sandcheck/reports/merge.py).

``--sign-key KEY`` signs the bundle (sandcheck/reports/attestation.py); the key is read
before the run, so a wrong passphrase costs seconds, not a run. ``verify-bundle
--public-key PUB`` checks who signed it and that nothing changed since.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sandcheck.reports.signing import SigningKey

CERTIFY_VERSION = "2"
SELECTION = {
    "version": CERTIFY_VERSION,
    "suites": ["isolation", "runtimeclass", "security"],
    "markers": "not performance",
}


def certify_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sandcheck certify",
        description="certify every selected node x runtime class; other options are the "
                    "suites' pytest options (--backend, --runtimes, --kubeconfig, ...)")
    p.add_argument("--bundle", type=Path, default=Path("sandcheck-certification"),
                   help="directory the bundle is written to (must be empty or absent)")
    p.add_argument("--nodes", default="all", help="all or a label selector (default all)")
    p.add_argument("--node-parallelism", type=int, default=8,
                   help="pod starts in flight at once across nodes (default 8)")
    p.add_argument("--sign-key", type=Path, metavar="KEY",
                   help="sign the bundle with this private key (`sandcheck keygen`); its "
                        "passphrase from SANDCHECK_KEY_PASSPHRASE or a prompt")
    p.add_argument("--resume", type=Path, metavar="BUNDLE",
                   help="continue the certification in BUNDLE that did not finish: its "
                        "finished checks are kept, only the rest runs (give the options of "
                        "the interrupted run again)")
    return p


def pytest_args(args: argparse.Namespace, extra: list[str], suites: Path,
                resume: bool = False) -> list[str]:
    """The pytest command line of a certify run (pure)."""
    return [*(str(suites / s) for s in SELECTION["suites"]), "-m", SELECTION["markers"],
            "--nodes", args.nodes, "--node-parallelism", str(args.node_parallelism),
            "--report-dir", str(args.bundle), f"--junitxml={args.bundle / 'junit.xml'}",
            "-p", "no:cacheprovider", "--selection-version", CERTIFY_VERSION,
            *(["--resume"] if resume else []), *extra]


def resume_refusal(bundle: Path) -> str | None:
    """Why ``bundle`` cannot be resumed (one line), or None: it holds the journal of a
    certify run of this selection that no live process writes, or the results of a run
    that ended before its bundle was finished."""
    from sandcheck.reports.bundle import MANIFEST
    from sandcheck.reports.journal import JournalError, busy, journal_paths, read_journal

    if not bundle.is_dir():
        return f"{bundle} is not a directory"
    journals = journal_paths(bundle)
    if not journals:
        if (bundle / MANIFEST).is_file():
            return (f"{bundle} is complete (its run ended and SHA256SUMS is written): "
                    f"nothing to resume; check it with `sandcheck verify-bundle {bundle}`")
        if not (bundle / "results.json").is_file():
            return f"{bundle} holds no journal: no certify run was interrupted there"
        return None  # ended before its bundle was finished: finish it
    for path in journals:
        who = busy(path)
        if who is not None:
            return f"{path} is still being written ({who}): that certify run is alive"
    try:
        identity = read_journal(journals[0]).identity
    except JournalError as exc:
        return str(exc)
    version = identity.get("selection_version")
    if version != CERTIFY_VERSION:
        return (f"{bundle} is a certification of selection version {version}; this sandcheck "
                f"certifies version {CERTIFY_VERSION}: certify into a new bundle")
    return None


def _error(message: object) -> int:
    print(f"sandcheck: error: {message}", file=sys.stderr)
    return 2


def load_signer(key: Path | None, bundle: Path | None = None) -> SigningKey | None:
    """The SigningKey of ``--sign-key`` (None without one); UserError when it cannot be
    used, or lies inside the bundle that is handed over."""
    if key is None:
        return None
    from sandcheck.errors import UserError
    from sandcheck.reports.signing import load_signing_key

    if bundle is not None and key.resolve().is_relative_to(bundle.resolve()):
        raise UserError(f"--sign-key {key} is inside the bundle {bundle}, which is handed "
                        "over: keep the private key outside it")
    return load_signing_key(key)


def catalog_digest(extra: list[str]) -> str:
    """The digest of the catalog the run's pytest options (``--catalog FILE``) load."""
    from sandcheck.catalog import Catalog

    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    p.add_argument("--catalog", type=Path)
    return Catalog.load(p.parse_known_args(extra)[0].catalog).digest()


def certify(argv: list[str]) -> int:
    import pytest

    from sandcheck.cli.bundled import suites_dir
    from sandcheck.errors import UserError
    from sandcheck.reports.bundle import utc_stamp
    from sandcheck.reports.journal import journal_paths

    args, extra = certify_parser().parse_known_args(argv)
    resuming = args.resume is not None
    if resuming:
        if "--bundle" in argv or any(a.startswith("--bundle=") for a in argv):
            return _error("--resume BUNDLE names the bundle: drop --bundle")
        args.bundle = args.resume
        why = resume_refusal(args.bundle)
        if why is not None:
            return _error(f"--resume: {why}")
    bundle: Path = args.bundle
    if not resuming and bundle.exists() and any(bundle.iterdir()):
        return _error(f"{bundle} is not empty: a bundle holds one run only; choose another "
                      "--bundle (or continue an interrupted run with --resume)")
    try:
        signer = load_signer(args.sign_key, bundle)
        catalog = catalog_digest(extra)
    except UserError as exc:
        return _error(exc)
    started = utc_stamp()
    if resuming and not journal_paths(bundle):
        print(f"sandcheck: the run in {bundle} had ended; finishing its bundle")
        code = 0
    else:
        code = int(pytest.main(pytest_args(args, extra, suites_dir(), resume=resuming)))
    if code == pytest.ExitCode.USAGE_ERROR:
        return 2  # pytest said why, in one line
    return finish(bundle, code, started, catalog, signer)


def finish(bundle: Path, code: int, started: str | None = None,
           catalog: str | None = None, signer: SigningKey | None = None) -> int:
    """The bundle of a certify run that ended (stamped with its times and catalog when
    given, signed by ``signer`` when given); a run that did not end keeps its journal and
    gets no manifest."""
    from sandcheck.reports.attestation import sign_bundle
    from sandcheck.reports.bundle import finish_bundle, stamp_run, utc_stamp
    from sandcheck.reports.journal import JOURNAL, journal_paths

    if journal_paths(bundle):
        print(f"sandcheck: certify did not finish (pytest exit {code}); what it finished is "
              f"kept in {bundle / JOURNAL}: continue with `sandcheck certify --resume "
              f"{bundle}` and the same options", file=sys.stderr)
        return code or 1
    if not (bundle / "results.json").is_file():
        print(f"sandcheck: certify produced no results (pytest exit {code})", file=sys.stderr)
        return code or 1
    if started is not None:
        stamp_run(bundle, started, utc_stamp(), catalog)
    cert = finish_bundle(bundle, SELECTION)
    if signer is not None:
        print(f"sandcheck: signed {sign_bundle(bundle, signer)} with key {signer.keyid}")
    for cell in cert["cells"]:
        why = ", ".join(cell["failing_checks"]) or cell["reason"]
        print(f"sandcheck: {cell['node']} × {cell['runtime_class']}: {cell['verdict']}"
              + (f" ({why[:200]})" if cell["verdict"] != "pass" else ""))
    print(f"sandcheck: certification {cert['verdict']}; bundle {bundle} "
          f"(check it with `sandcheck verify-bundle {bundle}`)")
    return 0 if cert["verdict"] == "pass" and code in (0, 5) else 1


def verify(argv: list[str]) -> int:
    from sandcheck.reports.bundle import ATTESTATION, CERTIFICATION, verify_bundle

    p = argparse.ArgumentParser(prog="sandcheck verify-bundle",
                                description="check a certification bundle against its "
                                "SHA256SUMS; exit 1 naming every changed, missing or added "
                                "file; with --public-key also who signed it")
    p.add_argument("bundle", type=Path)
    p.add_argument("--public-key", type=Path, metavar="PUB",
                   help="the signer's public key (NAME.pub of `sandcheck keygen`): the "
                        "bundle must carry its valid attestation, and be exactly as signed")
    args = p.parse_args(argv)
    if not args.bundle.is_dir():
        return _error(f"{args.bundle} is not a directory")
    if args.public_key is not None:
        return verify_signed(args.bundle, args.public_key)
    problems = verify_bundle(args.bundle)
    for line in problems:
        print(f"sandcheck: TAMPERED {line}")
    if problems:
        return 1
    cert = json.loads((args.bundle / CERTIFICATION).read_text())
    print(f"sandcheck: bundle intact; certification {cert.get('verdict')} "
          f"(selection version {cert.get('selection', {}).get('version')}, "
          f"{len(cert.get('cells', []))} node × class cells)")
    signed = (args.bundle / ATTESTATION).is_file()
    print("sandcheck: origin not checked: SHA256SUMS shows the files are whole, not who "
          "made them; " + (f"the bundle carries a signed attestation ({ATTESTATION}): "
                           "check it with --public-key PUB" if signed else
                           "the bundle is not signed"))
    return 0


def verify_signed(bundle: Path, public_key: Path) -> int:
    """``verify-bundle --public-key``: exit 0 only for a bundle exactly as that key
    signed it; else one line naming what is wrong."""
    from sandcheck.errors import UserError
    from sandcheck.reports.attestation import Refused, verify_attestation
    from sandcheck.reports.bundle import verify_bundle
    from sandcheck.reports.signing import load_public_key

    try:
        public = load_public_key(public_key)
    except UserError as exc:
        return _error(exc)
    try:
        attested = verify_attestation(bundle, public)
    except Refused as exc:
        print(f"sandcheck: {'NOT SIGNED' if exc.unsigned else 'TAMPERED'} {exc}")
        return 1
    problems = verify_bundle(bundle)  # as signed, so only a signer's own mistake shows here
    for line in problems:
        print(f"sandcheck: TAMPERED {line}")
    for line in attested.lines():
        print(f"sandcheck: {line}")
    return 1 if problems else 0


def merge(argv: list[str]) -> int:
    from sandcheck.errors import UserError
    from sandcheck.reports.merge import merge_bundles

    p = argparse.ArgumentParser(prog="sandcheck merge-bundles",
                                description="merge the bundles of certify runs of disjoint "
                                "--nodes against one cluster into one bundle; each must verify")
    p.add_argument("out", type=Path, help="directory of the merged bundle (absent or empty)")
    p.add_argument("bundles", type=Path, nargs="+", metavar="BUNDLE")
    p.add_argument("--sign-key", type=Path, metavar="KEY",
                   help="sign the merged bundle with this private key (the inputs' "
                        "attestations are not carried over)")
    args = p.parse_args(argv)
    try:
        signer = load_signer(args.sign_key, args.out)
        cert = merge_bundles(args.out, args.bundles, signer)
    except UserError as exc:
        return _error(exc)
    nodes = len({c["node"] for c in cert["cells"]})
    print(f"sandcheck: {len(args.bundles)} bundles merged into {args.out}: {nodes} nodes, "
          f"{len(cert['cells'])} node × class cells; certification {cert['verdict']} "
          f"(check it with `sandcheck verify-bundle {args.out}`)")
    return 0 if cert["verdict"] == "pass" else 1
