"""The Kubernetes and etcd builds: the generated build module, and the real cached binaries.

The build tests are quick once the cache is warm (CI provisions first); cold they build
Kubernetes from the Go module proxy, which takes many minutes on two cores.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from sandcheck.errors import ComponentError, UserError
from sandcheck.provision import gobuild
from sandcheck.provision import kubernetes as kb
from sandcheck.provision.paths import cache_dir
from sandcheck.provision.pins import ETCD_VERSION, KUBERNETES_VERSION

KUBERNETES_GOMOD = """\
// This is a generated file. Do not edit directly.
module k8s.io/kubernetes

go 1.25.0

godebug default=go1.24

require (
	github.com/blang/semver/v4 v4.0.0
	k8s.io/api v0.0.0
	k8s.io/client-go v0.0.0
)

require github.com/kylelemons/godebug v1.1.0 // indirect

replace (
	k8s.io/api => ./staging/src/k8s.io/api
	k8s.io/client-go => ./staging/src/k8s.io/client-go // a comment
)

replace example.com/forked v1.0.0 => example.com/fork v1.0.1
"""


def _pinned_gomod(module: str, version: str) -> str:
    """The pinned release's go.mod from the module cache (a provisioned host has it)."""
    path = cache_dir() / "go" / "mod" / "cache" / "download" / module / "@v" / f"{version}.mod"
    if not path.is_file():
        pytest.skip(f"{module}@{version} not in the module cache: run "
                    "`sandcheck provision --kubernetes`")
    return path.read_text()


def test_staging_version_maps_the_minor_and_patch():
    assert kb.staging_version("v1.34.12") == "v0.34.12"
    assert kb.staging_version("v1.35.0-rc.1") == "v0.35.0-rc.1"
    with pytest.raises(UserError, match="v1.MINOR.PATCH"):
        kb.staging_version("1.34")


def test_parse_replaces_reads_blocks_and_single_lines():
    assert kb.parse_replaces(KUBERNETES_GOMOD) == [
        ("k8s.io/api", "./staging/src/k8s.io/api"),
        ("k8s.io/client-go", "./staging/src/k8s.io/client-go"),
        ("example.com/forked v1.0.0", "example.com/fork v1.0.1"),
    ]


def test_rendered_gomod_replaces_staging_with_published_versions():
    gomod = kb.render_kubernetes_gomod(KUBERNETES_GOMOD, "v1.34.12")
    lines = [line.strip() for line in gomod.splitlines()]
    assert "require k8s.io/kubernetes v1.34.12" in lines
    assert "k8s.io/api => k8s.io/api v0.34.12" in lines
    assert "k8s.io/client-go => k8s.io/client-go v0.34.12" in lines
    assert "example.com/forked v1.0.0 => example.com/fork v1.0.1" in lines
    # the main module decides the language version and GODEBUG defaults
    assert "go 1.25.0" in lines and "godebug default=go1.24" in lines
    assert not any("./staging" in line for line in lines)


def test_rendered_gomod_of_the_pinned_release_replaces_every_staging_module():
    """Against the real go.mod: every module required at v0.0.0 (a staging module) gets a
    published version, and no local path is left for the build module to resolve."""
    real = _pinned_gomod(kb.KUBERNETES_MODULE, KUBERNETES_VERSION)
    staging = {line.split()[0] for line in kb.directives(real, "require")
               if line.split()[1:2] == ["v0.0.0"]}
    assert len(staging) > 20  # api, apimachinery, client-go, ... : the parse found them
    rendered = kb.render_kubernetes_gomod(real, KUBERNETES_VERSION)
    replaced = dict(kb.parse_replaces(rendered))
    published = kb.staging_version(KUBERNETES_VERSION)
    assert {m: replaced.get(m) for m in staging} == {m: f"{m} {published}" for m in staging}
    assert not [new for new in replaced.values() if new.startswith(("/", "./", "../"))]


def test_rendered_etcd_gomod_requires_only_the_server_module():
    real = _pinned_gomod(kb.ETCD_MODULE, ETCD_VERSION)
    assert kb.parse_replaces(real)  # etcd's own go.mod has the local replaces ...
    rendered = kb.render_etcd_gomod(real, ETCD_VERSION)
    assert kb.parse_replaces(rendered) == []  # ... the build module needs none
    assert kb.directives(rendered, "require") == [f"{kb.ETCD_MODULE} {ETCD_VERSION}"]


def test_rendered_gomod_without_replaces_is_an_error():
    with pytest.raises(ComponentError, match="no replace block"):
        kb.render_kubernetes_gomod("module k8s.io/kubernetes\n\ngo 1.25.0\n", "v1.34.12")


def test_ldflags_stamp_both_version_packages_with_the_release_date():
    flags = gobuild.ldflags(kb.kubernetes_tool("v1.35.2"), "2026-09-23T17:08:30Z").split(" -X ")
    assert flags[0] == "-s -w"
    for pkg in kb.KUBERNETES_VERSION_PACKAGES:
        for setting in ("gitVersion=v1.35.2", "gitMajor=1", "gitMinor=35",
                        "gitTreeState=clean", "gitCommit=", "buildDate=2026-09-23T17:08:30Z"):
            assert f"{pkg}.{setting}" in flags


def test_tools_go_is_excluded_from_builds():
    text = gobuild.render_tools_go(["k8s.io/kubernetes/cmd/kubelet"])
    assert text.startswith("//go:build tools\n")
    assert '_ "k8s.io/kubernetes/cmd/kubelet"' in text


def test_etcd_binary_is_where_go_writes_a_major_version_package():
    assert kb.ETCD.binaries() == {"etcd": kb.ETCD.target() / "server"}


def _run(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}: {proc.stderr[-2000:]}"
    return proc.stdout + proc.stderr


def test_built_kubernetes_binaries_report_the_pinned_version():
    lines: list[str] = []
    binaries = gobuild.build(kb.KUBERNETES, progress=lines.append)
    assert sorted(binaries) == sorted(kb.KUBERNETES_COMMANDS)
    for name, path in binaries.items():
        if name == "kubectl":
            out = _run([str(path), "version", "--client"])
            assert f"Client Version: {KUBERNETES_VERSION}" in out
        elif name == "kubeadm":
            out = _run([str(path), "version", "-o", "short"])
            assert out.strip() == KUBERNETES_VERSION, f"{name}: {out!r}"
        else:
            out = _run([str(path), "--version"])
            assert out.strip() == f"Kubernetes {KUBERNETES_VERSION}", f"{name}: {out!r}"
    # a second call is the cached path: no rebuild, one status line
    again: list[str] = []
    assert gobuild.build(kb.KUBERNETES, progress=again.append) == binaries
    assert len(again) == 1 and "cached" in again[0]


def test_built_etcd_reports_the_pinned_version():
    etcd = gobuild.build(kb.ETCD, progress=lambda _line: None)["etcd"]
    out = _run([str(etcd), "--version"])
    assert f"etcd Version: {ETCD_VERSION.lstrip('v')}" in out
    assert Path(etcd).parent == kb.ETCD.target()
