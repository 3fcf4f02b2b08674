"""``sandcheck certify`` and ``sandcheck verify-bundle``.

Certify runs a fixed, versioned selection of the bundled suites (isolation, RuntimeClass
and security: escape preconditions and the host syscall surface; never the benchmarks,
whose numbers are no pass/fail) on every selected node × runtime class, through pytest
like ``sandcheck run``, and turns the report dir into a bundle (sandcheck/reports/bundle.py). The
selection changes only with CERTIFY_VERSION, so two bundles of one version certify the
same thing. Other options (``--backend``, ``--runtimes``, ``--kubeconfig``,
``--kind-workers``...) are pytest's and pass through.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

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
    return p


def pytest_args(args: argparse.Namespace, extra: list[str], suites: Path) -> list[str]:
    """The pytest command line of a certify run (pure)."""
    return [*(str(suites / s) for s in SELECTION["suites"]), "-m", SELECTION["markers"],
            "--nodes", args.nodes, "--node-parallelism", str(args.node_parallelism),
            "--report-dir", str(args.bundle), f"--junitxml={args.bundle / 'junit.xml'}",
            "-p", "no:cacheprovider", *extra]


def certify(argv: list[str]) -> int:
    import pytest

    from sandcheck.cli.bundled import suites_dir
    from sandcheck.reports.bundle import finish_bundle

    args, extra = certify_parser().parse_known_args(argv)
    bundle: Path = args.bundle
    if bundle.exists() and any(bundle.iterdir()):
        print(f"sandcheck: error: {bundle} is not empty: a bundle holds one run only; "
              "choose another --bundle", file=sys.stderr)
        return 2
    code = int(pytest.main(pytest_args(args, extra, suites_dir())))
    if not (bundle / "results.json").is_file():
        print(f"sandcheck: certify produced no results (pytest exit {code})", file=sys.stderr)
        return code or 1
    cert = finish_bundle(bundle, SELECTION)
    for cell in cert["cells"]:
        why = ", ".join(cell["failing_checks"]) or cell["reason"]
        print(f"sandcheck: {cell['node']} × {cell['runtime_class']}: {cell['verdict']}"
              + (f" ({why[:200]})" if cell["verdict"] != "pass" else ""))
    print(f"sandcheck: certification {cert['verdict']}; bundle {bundle} "
          f"(check it with `sandcheck verify-bundle {bundle}`)")
    return 0 if cert["verdict"] == "pass" and code in (0, 5) else 1


def verify(argv: list[str]) -> int:
    from sandcheck.reports.bundle import CERTIFICATION, verify_bundle

    p = argparse.ArgumentParser(prog="sandcheck verify-bundle",
                                description="check a certification bundle against its "
                                "SHA256SUMS; exit 1 naming every changed, missing or added file")
    p.add_argument("bundle", type=Path)
    args = p.parse_args(argv)
    if not args.bundle.is_dir():
        print(f"sandcheck: error: {args.bundle} is not a directory", file=sys.stderr)
        return 2
    problems = verify_bundle(args.bundle)
    for line in problems:
        print(f"sandcheck: TAMPERED {line}")
    if problems:
        return 1
    cert = json.loads((args.bundle / CERTIFICATION).read_text())
    print(f"sandcheck: bundle intact; certification {cert.get('verdict')} "
          f"(selection version {cert.get('selection', {}).get('version')}, "
          f"{len(cert.get('cells', []))} node × class cells)")
    return 0
