"""The containerd config of a kind node: the catalog's handlers in the table kind's
containerd reads, with the node's own conventions (pure: TOML text in, text out).

kind's node config is schema 2 whatever containerd it ships, and its runc handler sets the
conventions every handler on that node must follow: the cgroup driver (with systemd,
kubelet passes cgroup paths as ``slice:prefix:name``, which a handler driving cgroupfs
misreads) and kind's base OCI spec. So a runc-type handler (crun) copies both, and runsc
gets ``systemd-cgroup`` in its runsc config file where the node uses systemd.

Clusters this backend creates use the cgroupfs driver (kubelet and every handler, runc's
included): crun's systemd driver talks to systemd through the system D-Bus, and kind's
nodes (the official kindest/node too) run no D-Bus daemon, so every crun pod failed with
``OCI runtime create failed: cannot open sd-bus: No such file or directory`` (runc reaches
systemd on its private socket instead; pointing crun's sd-bus there answers
``Invalid request descriptor``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import tomlkit

from sandcheck.catalog import Runtime
from sandcheck.containerd import config as ctdconfig

CONFIG_DIR = "/etc/containerd"
CONFIG_PATH = f"{CONFIG_DIR}/config.toml"
KIND_SCHEMA = 2
RUNC_TYPE = "io.containerd.runc.v2"
RUNSC_TYPE = "io.containerd.runsc.v1"
CGROUP_DRIVER = "cgroupfs"
CREATE_DEFAULTS = {"base_runtime_spec": "/etc/containerd/cri-base.json",
                   "SystemdCgroup": CGROUP_DRIVER == "systemd"}
"""kind's base OCI spec (images/base/files) and the driver of the clusters made here."""
KIND_TEST_HANDLER = "test-handler"
"""kind's config registers a runc copy under this name for Kubernetes' own e2e tests."""


def node_defaults(doc: Any) -> dict[str, Any]:
    """base_runtime_spec and SystemdCgroup of the node's runc handler."""
    runc = ctdconfig.handlers(doc, KIND_SCHEMA).get("runc") or {}
    found = {"SystemdCgroup": bool((runc.get("options") or {}).get("SystemdCgroup"))}
    if runc.get("base_runtime_spec"):
        found["base_runtime_spec"] = runc["base_runtime_spec"]
    return found


def adapted(rt: Runtime, defaults: dict[str, Any]) -> Runtime:
    """``rt`` following the node's conventions (see the module docstring)."""
    systemd = bool(defaults.get("SystemdCgroup"))
    if rt.runtime_type == RUNC_TYPE:
        settings = dict(rt.handler_settings)
        if defaults.get("base_runtime_spec"):
            settings.setdefault("base_runtime_spec", defaults["base_runtime_spec"])
        return replace(rt, handler_settings=settings,
                       options={**rt.options, "SystemdCgroup": systemd})
    if rt.runtime_type == RUNSC_TYPE and systemd:
        files = {name: {**table, "runsc_config": {**table.get("runsc_config", {}),
                                                   "systemd-cgroup": "true"}}
                 if "runsc_config" in table else table
                 for name, table in rt.config_files.items()}
        return replace(rt, config_files=files)
    return rt


def patched(text: str, runtimes: list[Runtime]) -> tuple[str, ctdconfig.PatchReport]:
    """The node's config.toml with ``runtimes``' handlers, and the patcher's report
    (its ``files``: runsc.toml and the like, to write next to it)."""
    doc = ctdconfig.parse(text, CONFIG_PATH)
    defaults = node_defaults(doc)
    report = ctdconfig.patch(doc, [adapted(rt, defaults) for rt in runtimes], CONFIG_DIR,
                             schema=KIND_SCHEMA)
    return tomlkit.dumps(doc), report


def create_patch(runtimes: list[Runtime]) -> str:
    """A ``containerdConfigPatches`` entry (v2 keys, which kind merges) registering
    ``runtimes``, and kind's own handlers on the cgroup driver of ``CGROUP_DRIVER``."""
    doc = tomlkit.document()
    doc["version"] = KIND_SCHEMA
    ctdconfig.patch(doc, [adapted(rt, CREATE_DEFAULTS) for rt in runtimes], CONFIG_DIR,
                    schema=KIND_SCHEMA)
    plain = doc.unwrap()
    tables = plain["plugins"][ctdconfig.CRI_RUNTIME_PLUGIN[KIND_SCHEMA][1]]["containerd"]
    for handler in ("runc", KIND_TEST_HANDLER):  # kind's own handlers follow the driver
        table = tables["runtimes"].setdefault(handler, {})
        table.setdefault("options", {})["SystemdCgroup"] = CREATE_DEFAULTS["SystemdCgroup"]
    return tomlkit.dumps(plain)
