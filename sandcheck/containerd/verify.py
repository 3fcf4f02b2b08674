"""``sandcheck verify``: does the real containerd see each handler of a config?

The config runs in a private containerd (own root, state and socket; the host's daemon is
not touched) and each handler is looked up in CRI's effective config. A handler in another
schema's table, which containerd silently ignores, is named with the table it must be in.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import tomlkit

from sandcheck.catalog import Runtime
from sandcheck.containerd import config as cc
from sandcheck.containerd.config import containerd_version
from sandcheck.containerd.daemon import PrivateContainerd, find_binary
from sandcheck.errors import UserError
from sandcheck.host.workdir import WORK_BASE


@dataclass
class VerifyResult:
    containerd: str
    schema: int
    lines: list[str]
    ok: bool


def verify(doc: tomlkit.TOMLDocument, runtimes: list[Runtime], config_dir: str,
           containerd: str = "containerd", origin: Path | None = None,
           pending: dict[Path, str] | None = None) -> VerifyResult:
    """Start the real containerd on ``doc`` and check that CRI sees each handler.

    containerd applies the imports itself (copies of them, privatized like the main
    file); ``pending`` gives files not written yet (a drop-in) their text."""
    schema = cc.schema_of(doc)
    binary = find_binary(containerd, "install containerd or pass --containerd PATH")
    version = containerd_version(binary)
    if schema == 3 and cc.schema_for_version(version) != 3:
        raise UserError(
            f"containerd {version} cannot read a version = 3 config: write the config with "
            "--schema 2, or verify with a containerd 2.x (--containerd PATH)"
        )
    disabled = [str(p) for p in doc.get("disabled_plugins", [])]
    if any(p in ("cri", "io.containerd.grpc.v1.cri") for p in disabled):
        raise UserError("the config disables the CRI plugin (disabled_plugins): remove it there")
    WORK_BASE.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="verify-", dir=WORK_BASE))
    lines: list[str] = []
    ok = True
    with PrivateContainerd(doc, workdir, binary=binary, config_origin=origin,
                           pending=pending) as daemon:
        effective = daemon.effective_runtimes()
    for rt in runtimes:
        got = effective.get(rt.handler)
        where = cc.table_name(cc.runtimes_path(schema))
        if got is None:
            ok = False
            present = [s for s in cc.find_handler(doc, rt.handler) if s != schema]
            hint = (
                f"it is in [{cc.table_name(cc.runtimes_path(present[0]))}.{rt.handler}], "
                f"which containerd {version} ignores; it must be in [{where}.{rt.handler}]"
                if present else f"add it under [{where}.{rt.handler}]"
            )
            lines.append(f"FAIL {rt.handler}: not in containerd {version}'s CRI config: {hint}")
            continue
        rtype = got.get("runtimeType") or got.get("runtime_type")
        if rtype != rt.runtime_type:
            ok = False
            lines.append(f"FAIL {rt.handler}: runtime_type is {rtype!r}, expected "
                         f"{rt.runtime_type!r}")
        else:
            lines.append(f"ok   {rt.handler}: runtime_type {rtype} (containerd {version})")
    return VerifyResult(containerd=version, schema=schema, lines=lines, ok=ok)
