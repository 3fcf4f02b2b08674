"""The node backend's containerd config: the catalog's handlers (patched in by
sandcheck.containerd.config) with every path the run's containerd uses, runtime roots and
registry hosts included, kept inside the run's work dir.
"""

from __future__ import annotations

from pathlib import Path

import tomlkit

from sandcheck.catalog import Runtime
from sandcheck.clusters.nodenet import cni_bin_dir
from sandcheck.containerd import config as cc
from sandcheck.containerd import tomledit as te
from sandcheck.containerd.images import ProbeImage

RUNSC_TYPE = "io.containerd.runsc.v1"


def registry_config_path(workdir: Path) -> Path:
    """containerd's ``config_path``: one ``<host>/hosts.toml`` per registry host."""
    return workdir / "etc" / "certs.d"


def nri_socket(workdir: Path) -> Path:
    """containerd's NRI socket, where NRI plugins connect."""
    return workdir / "nri" / "nri.sock"


def node_config(runtimes: list[Runtime], workdir: Path, image: ProbeImage, schema: int,
                default_alias: str | None) -> tomlkit.TOMLDocument:
    """containerd config for a run: the catalog's handlers plus private paths; writes the
    handlers' own files (runsc.toml) into ``<workdir>/etc``. ``default_alias``: one more
    handler name configured as the default runtime is."""
    doc = tomlkit.document()
    doc["version"] = schema
    etc = workdir / "etc"
    plugins = doc.setdefault("plugins", tomlkit.table(True))
    # containerd unpacks "opt" plugins under /opt/containerd unless told otherwise.
    plugins["io.containerd.internal.v1.opt"] = {"path": str(workdir / "opt")}
    # NRI on, its socket and plugin dirs in the work dir (critest's NRI specs connect as
    # a plugin; containerd 1.7 has it off by default).
    nri = workdir / "nri"
    plugins["io.containerd.nri.v1.nri"] = {
        "disable": False, "socket_path": str(nri_socket(workdir)),
        "plugin_path": str(nri / "plugins"), "plugin_config_path": str(nri / "conf.d")}
    cni = {"bin_dir": cni_bin_dir(), "conf_dir": str(etc / "cni"), "max_conf_num": 1}
    # Lowering the sandbox's oom_score_adj needs CAP_SYS_RESOURCE, which root lacks on
    # some VMs and CI containers; restricting it to containerd's own score always works.
    runtime_settings = {"restrict_oom_score_adj": True, "cni": cni}
    default = runtimes[0].handler
    # Pulls follow the run's own registry host configuration, never the host's.
    registry = {"config_path": str(registry_config_path(workdir))}
    if schema == 2:
        plugins["io.containerd.grpc.v1.cri"] = {
            **runtime_settings,
            "sandbox_image": image.alias,
            "netns_mounts_under_state_dir": True,
            "containerd": {"snapshotter": "overlayfs", "default_runtime_name": default},
            "registry": registry,
        }
    else:
        doc["imports"] = []
        plugins["io.containerd.cri.v1.images"] = {
            "snapshotter": "overlayfs", "pinned_images": {"sandbox": image.alias},
            "registry": registry}
        plugins["io.containerd.cri.v1.runtime"] = {
            **runtime_settings,
            "netns_mounts_under": str(workdir / "netns"),
            "containerd": {"default_runtime_name": default},
        }
    report = cc.patch(doc, runtimes, str(etc), schema=schema)
    # Private runtime roots: a crash leaves state under the work dir, found by cleanup.
    for rt in runtimes:
        handler = cc.handler_table(doc, schema, rt.handler)
        if rt.runtime_type == "io.containerd.runc.v2":
            handler["options"]["Root"] = str(workdir / "runtime" / rt.handler)
    if default_alias:
        alias = te.plain(cc.handler_table(doc, schema, default))
        te.get(doc, cc.runtimes_path(schema))[default_alias] = alias
    etc.mkdir(parents=True, exist_ok=True)
    owners = {fname: rt for rt in runtimes for fname in rt.config_files}
    for fname, text in report.files.items():
        content = tomlkit.parse(text)
        owner = owners.get(fname)
        if owner is not None and owner.runtime_type == RUNSC_TYPE:
            # A root of each gVisor handler's own (runsc and runsc-kvm side by side).
            content["root"] = str(workdir / "runtime" / owner.handler)
        (etc / fname).write_text(tomlkit.dumps(content))
    return doc
