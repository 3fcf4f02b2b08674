"""The ``sandcheck`` command: configure containerd, print RuntimeClasses, provision, clean up.

Every error a user can cause ends in exit status 2 and one line that says what is wrong
and what to do; nothing the user gave is modified on error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sandcheck.catalog import Catalog
from sandcheck.containerd import config as cc
from sandcheck.errors import ComponentError, UserError
from sandcheck.host.files import atomic_write


def _catalog(args) -> Catalog:
    return Catalog.load(Path(args.catalog) if args.catalog else None)


def read_config_text(path: Path) -> str:
    """The file's text exactly (CRLF and a BOM kept: ``read_text`` would drop the CRs)."""
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise UserError(f"{path} does not exist: give an existing config.toml, or omit "
                        "PATH to start from containerd's defaults") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} cannot be read as text ({exc}): give a config.toml") from None


def _atomic_write(path: Path, text: str, backup: bool) -> Path | None:
    return atomic_write(path, text, backup_first=backup)


def cmd_containerd_config(args) -> int:
    from sandcheck.containerd import command

    catalog = _catalog(args)
    runtimes = catalog.select(args.runtimes)
    for flag, given in (("--in-place", args.in_place), ("--drop-in", args.drop_in),
                        ("--apply", args.apply)):
        if given and not args.path:
            raise UserError(f"{flag} needs a PATH to a config.toml")
    if args.output and (args.in_place or args.drop_in or args.apply):
        raise UserError("-o FILE writes a new file: drop --in-place, --drop-in and --apply")
    node = command.node_of(args) if args.apply else None
    schema = args.schema
    if args.path:
        path = Path(args.path)
        original = read_config_text(path)
        doc = cc.parse(original, str(path))
        cc.schema_of(doc, str(path))
        if not doc.keys() and schema is None:
            # An empty file says nothing about its containerd: treat it as a new one.
            schema = cc.schema_for_containerd(args.containerd) or 2
    else:
        path, original = None, None
        if schema is None:
            schema = cc.schema_for_containerd(args.containerd) or 2
        doc = cc.default_document(schema, args.containerd)
    in_place = args.in_place or (args.apply and not args.drop_in)
    dest = path if in_place else (Path(args.output) if args.output else None)
    base = path if args.drop_in else dest
    config_dir = args.config_dir or str((base or Path("/etc/containerd/config.toml")).resolve()
                                        .parent)
    pending = None
    if args.drop_in:
        writes, report, doc, pending = command.drop_in(args, path, original, runtimes,
                                                       config_dir, args.schema)
    else:
        report = cc.patch(doc, runtimes, config_dir, schema=schema,
                          default_runtime=args.set_default)
        text = cc.render(doc, report, original)
        for line in report.lines():
            command.say(line)
        writes = {dest: text} if dest is not None else {}
    if args.verify:
        from sandcheck.containerd.verify import verify
        result = verify(doc, runtimes, config_dir, containerd=args.containerd, origin=path,
                        pending=pending)
        for line in result.lines:
            print(f"verify: {line}", file=sys.stderr)
        if not result.ok:
            print("sandcheck: verification failed; nothing was written", file=sys.stderr)
            return 1
    if dest is None and not args.drop_in:
        sys.stdout.write(text)
        for name in report.files:
            command.say(f"the config names {Path(config_dir) / name}; write it with "
                        "-o FILE or --in-place, or create it yourself")
        return 0
    for name, content in report.files.items():
        target = Path(config_dir) / name
        if not (target.exists() and target.read_text() == content):
            writes[target] = content
    if args.dry_run:
        return command.dry_run(writes, node, runtimes)
    if node is not None:
        return command.run_apply(writes, node, runtimes)
    command.write_all(writes, backup_existing=in_place or bool(args.drop_in))
    return 0


def cmd_verify(args) -> int:
    from sandcheck.containerd.verify import verify
    path = Path(args.path)
    if not path.is_file():
        raise UserError(f"{path} is not a file: give the config.toml to verify")
    doc = cc.parse(read_config_text(path), str(path))
    runtimes = _catalog(args).select(args.runtimes)
    result = verify(doc, runtimes, str(path.resolve().parent), containerd=args.containerd,
                    origin=path)
    for line in result.lines:
        print(line)
    return 0 if result.ok else 1


def cmd_runtimeclasses(args) -> int:
    from sandcheck.clusters.runtimeclass import manifests
    sys.stdout.write(manifests(_catalog(args).select(args.runtimes)))
    return 0


def cmd_catalog(args) -> int:
    for rt in _catalog(args).runtimes.values():
        kernel = {True: "own kernel", False: "node kernel",
                  None: "unknown"}[rt.isolation.own_kernel]
        note = f"  [needs a host check: {rt.precondition}]" if rt.precondition else ""
        note += f"  [unavailable: {rt.unavailable}]" if rt.unavailable else ""
        print(f"{rt.name:9} handler={rt.handler:10} class={rt.runtime_class:10} "
              f"type={rt.runtime_type:28} {kernel}{note}")
    return 0


def cmd_provision(args) -> int:
    from sandcheck.provision.install import provision
    provision(_catalog(args).select(args.runtimes), kubernetes=args.kubernetes,
              docker=args.docker, kind=args.kind, kwok=args.kwok, registry=args.registry,
              upstream=args.upstream)
    return 0


def cmd_cleanup(args) -> int:
    from sandcheck.cleanup import cleanup
    for line in cleanup(dry_run=args.dry_run, force=args.force, run=args.run):
        print(line)
    return 0


def cmd_backends(args) -> int:
    from sandcheck.clusters.registry import BACKENDS, DEFAULT_BACKEND

    for entry in BACKENDS.values():
        why = entry.unavailable()
        state = "ready" if why is None else f"unavailable: {why}"
        default = " (default)" if entry.name == DEFAULT_BACKEND else ""
        flags = " ".join(o.flag for o in entry.options)
        print(f"{entry.name}{default}: {entry.summary}\n    options: {flags or '-'}\n"
              f"    {state}")
    return 0


def cmd_push_image(args) -> int:
    from sandcheck.fixtures.image import build_probe_image
    from sandcheck.oci.push import push_archive
    from sandcheck.oci.reference import parse_target
    from sandcheck.provision.paths import cache_dir

    target = parse_target(args.target)
    if args.archive:
        archive, tag = Path(args.archive), target.tag or "latest"
    else:
        image = build_probe_image(cache_dir() / "probe")
        archive, tag = image.archive, target.tag or image.ref.rsplit(":", 1)[1]
    if not archive.is_file():
        raise UserError(f"--archive {archive}: no such file")
    pushed = push_archive(archive, target.with_tag(tag), insecure=args.insecure,
                          progress=lambda line: print(f"sandcheck: {line}", file=sys.stderr))
    print(f"sandcheck: pushed {pushed.reference} ({pushed.digest}; "
          f"{len(pushed.blobs_uploaded)} blobs uploaded, {len(pushed.blobs_present)} "
          "already there)", file=sys.stderr)
    print(f"sandcheck: run the suites with --image {pushed.reference}", file=sys.stderr)
    print(pushed.reference)
    return 0


def cmd_keygen(args) -> int:
    from sandcheck.reports.signing import PASSPHRASE_ENV, passphrase, write_keypair

    name = Path(args.name)
    secret = b"" if args.no_passphrase else passphrase(f"{name}.key", confirm=True)
    if secret is None:
        raise UserError(f"no passphrase for {name}.key: set {PASSPHRASE_ENV}, run in a "
                        "terminal to be asked, or give --no-passphrase for a key kept "
                        "unencrypted")
    made = write_keypair(name, args.type, secret)
    state = "encrypted" if secret else "NOT encrypted (anyone who can read it can sign)"
    print(f"sandcheck: wrote {made.source} ({args.type}, mode 0600, {state}) and "
          f"{name}.pub; keyid {made.keyid}")
    print(f"sandcheck: sign with `sandcheck certify --sign-key {made.source} ...`; hand "
          f"{name}.pub to whoever checks: `sandcheck verify-bundle BUNDLE --public-key "
          f"{name}.pub`")
    return 0


def run_suites(pytest_args: list[str]) -> int:
    """``sandcheck run [pytest options]``: the bundled suites, from a checkout or a wheel."""
    import pytest

    from sandcheck.cli.bundled import suites_dir

    return int(pytest.main([str(suites_dir()), *pytest_args]))


def cmd_compare(args) -> int:
    from sandcheck.reports.baseline import compare_files
    return compare_files(Path(args.old), Path(args.new),
                         Path(args.tolerances) if args.tolerances else None)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sandcheck", description=__doc__.splitlines()[0])
    p.add_argument("--catalog", help="TOML file adding or overriding runtimes")
    sub = p.add_subparsers(dest="command", required=True)

    def runtimes_opt(sp, default="runc,crun,runsc"):
        sp.add_argument("--runtimes", default=default,
                        help=f"comma-separated catalog names (default {default})")

    c = sub.add_parser("containerd-config", help="add runtime handlers to a containerd config")
    c.add_argument("path", nargs="?", help="config.toml to read (default: containerd's defaults)")
    runtimes_opt(c)
    c.add_argument("--schema", type=int, choices=(1, 2, 3),
                   help="force the schema (default: the file's version, or the installed "
                        "containerd's)")
    c.add_argument("-o", "--output", help="write to FILE instead of stdout")
    c.add_argument("--in-place", action="store_true", help="rewrite PATH atomically, with a backup")
    c.add_argument("--verify", action="store_true",
                   help="start the real containerd on the result and check every handler")
    c.add_argument("--containerd", default="containerd", help="containerd binary for --verify")
    c.add_argument("--config-dir", help="directory runtime config files live in on the node")
    c.add_argument("--set-default", help="also make this handler containerd's default runtime")
    c.add_argument("--drop-in", metavar="DIR",
                   help="write the handlers as DIR/99-sandcheck.toml instead of editing PATH "
                        "(with --in-place, PATH gets an import of DIR when it lacks one)")
    c.add_argument("--dry-run", action="store_true",
                   help="print the diff of every file (and with --apply the plan); change "
                        "nothing")
    c.add_argument("--apply", action="store_true",
                   help="on a node: back up, write, restart containerd, check every handler "
                        "with a pod; roll back on any failure")
    c.add_argument("--address", help="--apply: the node containerd's socket (CRI endpoint)")
    c.add_argument("--restart-command", metavar="CMD",
                   help="--apply: how to restart containerd (default: systemctl restart "
                        "containerd when PID 1 is systemd)")
    c.add_argument("--image-archive",
                   help="--apply: image archive to import when the sandbox image is missing "
                        "(default: the probe image sandcheck built)")
    c.add_argument("--crictl", help="--apply: crictl binary (default: the provisioned one)")
    c.set_defaults(func=cmd_containerd_config)

    v = sub.add_parser("verify", help="check a config.toml against the real containerd")
    v.add_argument("path")
    runtimes_opt(v)
    v.add_argument("--containerd", default="containerd")
    v.set_defaults(func=cmd_verify)

    r = sub.add_parser("runtimeclasses", help="print RuntimeClass manifests")
    runtimes_opt(r)
    r.set_defaults(func=cmd_runtimeclasses)

    sub.add_parser("catalog", help="list the runtimes sandcheck knows").set_defaults(
        func=cmd_catalog)

    pv = sub.add_parser("provision", help="install containerd, runtimes and tools")
    runtimes_opt(pv)
    pv.add_argument("--kubernetes", action="store_true",
                    help="also build the Kubernetes binaries for the local backend")
    pv.add_argument("--kind", action="store_true",
                    help="also build kind, kubeadm and a kind node image from local parts")
    pv.add_argument("--kwok", action="store_true",
                    help="also build kwok for the kwok backend's simulated nodes (implies "
                         "--kubernetes)")
    pv.add_argument("--docker", action="store_true",
                    help="also install Debian's docker.io for the docker backend")
    pv.add_argument("--registry", action="store_true",
                    help="also build CNCF Distribution's registry (--kind-registry, push-image "
                         "tests)")
    pv.add_argument("--upstream", action="store_true",
                    help="also build critest (cri-tools' CRI validation suite), Kubernetes' "
                         "e2e.test and agnhost, and the registry their image specs pull from "
                         "(suites/upstream)")
    pv.set_defaults(func=cmd_provision)

    cl = sub.add_parser("cleanup", help="remove what a crashed run left behind")
    cl.add_argument("--dry-run", action="store_true", help="say what would be removed")
    cl.add_argument("--force", action="store_true",
                    help="also remove the directories of runs that still seem alive")
    cl.add_argument("--run", metavar="ID",
                    help="clean this run only: its work dirs, and its cgroups (and their "
                         "processes) even when its work dirs are gone")
    cl.set_defaults(func=cmd_cleanup)

    sub.add_parser("backends", help="list the backends, their options and whether they "
                   "can run here").set_defaults(func=cmd_backends)
    sub.add_parser("run", help="run the bundled suites: sandcheck run [pytest options], e.g. "
                   "--backend node --runtimes runc -k kernel")
    sub.add_parser("certify", help="certify every node x runtime class into a bundle: "
                   "sandcheck certify [--bundle DIR] [--nodes all|SELECTOR] "
                   "[--node-parallelism N] [--sign-key KEY] [suite options, e.g. "
                   "--backend kind]")
    sub.add_parser("verify-bundle", help="check a certification bundle's SHA256SUMS, and "
                   "with --public-key who signed it: sandcheck verify-bundle DIR "
                   "[--public-key PUB]")
    sub.add_parser("merge-bundles", help="merge the bundles of certify runs of disjoint "
                   "--nodes against one cluster: sandcheck merge-bundles OUT BUNDLE... "
                   "[--sign-key KEY]")
    kg = sub.add_parser("keygen", help="make a key pair for signing bundles: NAME.key "
                        "(private, mode 0600) and NAME.pub")
    kg.add_argument("name", metavar="NAME", help="path prefix of the two files")
    kg.add_argument("--type", choices=("ed25519", "ecdsa-p256"), default="ed25519",
                    help="key type (default ed25519)")
    kg.add_argument("--no-passphrase", action="store_true",
                    help="leave NAME.key unencrypted (otherwise its passphrase comes from "
                         "SANDCHECK_KEY_PASSPHRASE or a prompt; empty also means none)")
    kg.set_defaults(func=cmd_keygen)

    pi = sub.add_parser("push-image", help="push the probe image to a registry: sandcheck "
                        "push-image REGISTRY[/REPO][:TAG], then run with --image REF")
    pi.add_argument("target", metavar="REGISTRY[/REPO][:TAG]",
                    help="e.g. registry.example.com/team/sandcheck-probe (repository default "
                         "sandcheck/probe, tag default the image's digest)")
    pi.add_argument("--archive", help="push this OCI image archive instead of the probe image")
    pi.add_argument("--insecure", action="store_true",
                    help="plain HTTP (always used for loopback registries)")
    pi.set_defaults(func=cmd_push_image)

    cp = sub.add_parser("compare", help="compare two results.json files")
    cp.add_argument("old")
    cp.add_argument("new")
    cp.add_argument("--tolerances", help="TOML of per-metric tolerances")
    cp.set_defaults(func=cmd_compare)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"]:
        return run_suites(argv[1:])  # every option after `run` is pytest's
    if argv[:1] in (["certify"], ["verify-bundle"], ["merge-bundles"]):
        from sandcheck.cli import certify

        run = {"certify": certify.certify, "verify-bundle": certify.verify,
               "merge-bundles": certify.merge}[argv[0]]
        return run(argv[1:])  # certify passes unknown options to pytest
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"sandcheck: error: {exc}", file=sys.stderr)
        return 2
    except ComponentError as exc:
        print(f"sandcheck: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("sandcheck: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
