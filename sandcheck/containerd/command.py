"""The parts of ``sandcheck containerd-config`` beyond patching one file: the drop-in
(``--drop-in DIR``), and what happens to the files (``--dry-run``, ``--apply``)."""

from __future__ import annotations

import sys
from pathlib import Path

from sandcheck.catalog import Runtime
from sandcheck.containerd import apply as ap
from sandcheck.containerd import config as cc
from sandcheck.containerd import dropin
from sandcheck.errors import UserError
from sandcheck.host.files import atomic_write
from sandcheck.provision.paths import cache_dir, path_dir


def say(line: str) -> None:
    print(f"sandcheck: {line}", file=sys.stderr)


def drop_in(args, path: Path, original: str, runtimes: list[Runtime], config_dir: str,
            schema: int | None) -> tuple[dict[Path, str], cc.PatchReport, object, dict]:
    """The files a drop-in run writes, its report, and the main doc and pending files a
    verify must start containerd with."""
    plan = dropin.plan(path, original, runtimes, Path(args.drop_in), config_dir, schema)
    for line in plan.report.lines() + plan.notes:
        say(line)
    writes = {plan.path: plan.text} if plan.changed else {}
    main_doc = cc.parse(original, str(path))
    if not plan.imported:
        dropin.add_import(main_doc, plan.import_pattern)
        if args.in_place or args.apply:
            writes[path] = cc.dumps(main_doc, like=original)
            say(f"{path} does not import {plan.path.parent}: adding \"{plan.import_pattern}\" "
                "to its imports")
        else:
            say(f"{path} does not import {plan.path.parent}, so containerd will not read "
                f"{plan.path.name}: add \"{plan.import_pattern}\" to its imports, or run again "
                "with --in-place")
    if not writes:
        say(f"{plan.path} already up to date")
    return writes, plan.report, main_doc, {plan.path: plan.text}


def write_all(writes: dict[Path, str], backup_existing: bool) -> None:
    for target, text in writes.items():
        if target.exists() and target.read_bytes() == text.encode():
            say(f"{target} already up to date")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        saved = atomic_write(target, text, backup_first=backup_existing)
        say(f"wrote {target}" + (f" (backup {saved})" if saved else ""))


def dry_run(writes: dict[Path, str], node: ap.Node | None, runtimes: list[Runtime]) -> int:
    for target, text in writes.items():
        old = target.read_bytes().decode("utf-8", "replace") if target.exists() else None
        sys.stdout.write(ap.diff(target, old, text) or f"# {target}: no change\n")
    if node is not None:
        print("plan:")
        for i, line in enumerate(ap.plan_lines(writes, node, runtimes), 1):
            print(f"  {i}. {line}")
    say("dry run: nothing was written or restarted")
    return 0


def node_of(args) -> ap.Node:
    if not args.address:
        raise UserError("--apply needs the node containerd's socket: --address "
                        "/run/containerd/containerd.sock")
    archive = Path(args.image_archive) if args.image_archive else _cached_probe_archive()
    crictl = args.crictl or _tool("crictl")
    return ap.Node(address=args.address, restart_command=ap.restart_argv(args.restart_command),
                   crictl=crictl, ctr=_tool("ctr"), image_archive=archive,
                   say=lambda line: say(f"apply: {line}"))


def run_apply(writes: dict[Path, str], node: ap.Node, runtimes: list[Runtime]) -> int:
    if not writes:
        say("apply: nothing to change; checking the node as it is")
    outcome = ap.apply(writes, runtimes, node)
    if outcome.ok:
        say("apply: done: every handler is in CRI's effective config and starts a pod")
        return 0
    if outcome.proven:
        say(f"apply failed: {outcome.reason}; the previous config is back in effect "
            "(CRI's effective config is identical to the one before)")
    else:
        say(f"apply failed: {outcome.reason}; ROLLBACK NOT PROVEN: check the node now "
            f"(backups: {', '.join(map(str, outcome.backups)) or 'none'})")
    return 1


def _cached_probe_archive() -> Path | None:
    """The newest probe image archive sandcheck built (the image for the check pods)."""
    archives = sorted((cache_dir() / "probe").glob("probe-image-*.tar"),
                      key=lambda p: p.stat().st_mtime)
    return archives[-1] if archives else None


def _tool(name: str) -> str:
    import shutil
    return shutil.which(name, path=f"{path_dir()}:/usr/local/bin:/usr/bin:/bin") or name
