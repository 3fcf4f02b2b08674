"""An OCI runtime wrapper that takes capabilities this host cannot grant out of a
container's config before the real runtime sees it.

Where root lacks CAP_SYS_RESOURCE (some VMs and CI containers), runc cannot give it to a
``--privileged`` container and refuses to start it ("unable to apply caps"). The private
dockerd runs privileged containers (kind's nodes) through this wrapper. This file is also
written out as the wrapper itself, so it imports nothing but the standard library.
"""

import json
import os
import sys

UNGRANTABLE = ("CAP_SYS_RESOURCE",)
SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")


def strip_capabilities(config: dict, drop=UNGRANTABLE) -> list:
    """Remove ``drop`` from every capability set of ``config``; returns what was removed."""
    caps = (config.get("process") or {}).get("capabilities") or {}
    removed = []
    for name in SETS:
        kept = [c for c in caps.get(name) or [] if c not in drop]
        if len(kept) != len(caps.get(name) or []):
            removed.append(name)
            caps[name] = kept
    return removed


def bundle_of(argv: list) -> str | None:
    """The bundle dir of a ``create``/``run`` call (``--bundle``/``-b``, else the cwd)."""
    if not any(a in ("create", "run") for a in argv):
        return None
    for i, arg in enumerate(argv):
        if arg in ("--bundle", "-b") and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--bundle="):
            return arg.split("=", 1)[1]
    return os.getcwd()


def process_file_of(argv: list) -> str | None:
    """The process file of an ``exec`` call (``--process``/``-p``): ``docker exec
    --privileged`` asks for every capability there, as ``run --privileged`` does in the
    bundle's config."""
    if "exec" not in argv:
        return None
    for i, arg in enumerate(argv):
        if arg in ("--process", "-p") and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--process="):
            return arg.split("=", 1)[1]
    return None


def _strip_file(path: str, wrap: bool) -> None:
    """Strip ``path`` (a config, or with ``wrap`` a bare process) in place."""
    with open(path) as fh:
        doc = json.load(fh)
    if strip_capabilities({"process": doc} if wrap else doc):
        with open(path, "w") as fh:
            json.dump(doc, fh)


def main(real_runtime: str) -> None:
    bundle = bundle_of(sys.argv[1:])
    if bundle is not None:
        _strip_file(os.path.join(bundle, "config.json"), wrap=False)
    process = process_file_of(sys.argv[1:])
    if process is not None:
        _strip_file(process, wrap=True)
    os.execv(real_runtime, [real_runtime, *sys.argv[1:]])
