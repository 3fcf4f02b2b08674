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


def main(real_runtime: str) -> None:
    bundle = bundle_of(sys.argv[1:])
    if bundle is not None:
        path = os.path.join(bundle, "config.json")
        with open(path) as fh:
            config = json.load(fh)
        if strip_capabilities(config):
            with open(path, "w") as fh:
                json.dump(config, fh)
    os.execv(real_runtime, [real_runtime, *sys.argv[1:]])
