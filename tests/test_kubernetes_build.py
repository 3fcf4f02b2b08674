"""The Kubernetes and etcd builds: go.mod generation, and the real cached binaries.

The build tests are quick once the cache is warm (CI provisions first); cold they build
Kubernetes from the Go module proxy, which takes many minutes on two cores.
"""

from __future__ import annotations

import subprocess

import pytest

from sandcheck.clusters.provision import kubernetes as kb

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


def test_staging_version_maps_the_minor_and_patch():
    assert kb.staging_version("v1.34.12") == "v0.34.12"
    assert kb.staging_version("v1.35.0-rc.1") == "v0.35.0-rc.1"
    with pytest.raises(kb.UserError, match="v1.MINOR.PATCH"):
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


def test_rendered_gomod_without_replaces_is_an_error():
    with pytest.raises(kb.ComponentError, match="no replace block"):
        kb.render_kubernetes_gomod("module k8s.io/kubernetes\n\ngo 1.25.0\n", "v1.34.12")


def test_ldflags_stamp_both_version_packages():
    flags = kb.kubernetes_ldflags("v1.34.12", "2026-09-23T17:08:30Z")
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        assert f"-X {pkg}.gitVersion=v1.34.12" in flags
        assert f"-X {pkg}.gitMajor=1" in flags
        assert f"-X {pkg}.gitMinor=34" in flags
        assert f"-X {pkg}.gitTreeState=clean" in flags
        assert f"-X {pkg}.buildDate=2026-09-23T17:08:30Z" in flags


def test_tools_go_is_excluded_from_builds():
    text = kb.render_tools_go(["k8s.io/kubernetes/cmd/kubelet"])
    assert text.startswith("//go:build tools\n")
    assert '_ "k8s.io/kubernetes/cmd/kubelet"' in text


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SANDCHECK_CACHE", str(tmp_path))
    assert kb.cache_dir() == tmp_path
    monkeypatch.delenv("SANDCHECK_CACHE")
    assert kb.cache_dir().parts[-2:] == (".cache", "sandcheck")


def test_unknown_command_is_a_user_error():
    with pytest.raises(kb.UserError, match="unknown kubernetes command"):
        kb.build_kubernetes(["kube-proxy-typo"], progress=lambda _line: None)


def _run(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}: {proc.stderr[-2000:]}"
    return proc.stdout + proc.stderr


def test_built_kubernetes_binaries_report_the_pinned_version():
    lines: list[str] = []
    binaries = kb.build_kubernetes(progress=lines.append)
    assert sorted(binaries) == sorted(kb.KUBERNETES_COMMANDS)
    for name, path in binaries.items():
        if name == "kubectl":
            out = _run([str(path), "version", "--client"])
            assert f"Client Version: {kb.KUBERNETES_VERSION}" in out
        else:
            out = _run([str(path), "--version"])
            assert out.strip() == f"Kubernetes {kb.KUBERNETES_VERSION}", f"{name}: {out!r}"
    # a second call is the cached path: no rebuild, one status line
    again: list[str] = []
    assert kb.build_kubernetes(progress=again.append) == binaries
    assert len(again) == 1 and "cached" in again[0]


def test_built_etcd_reports_the_pinned_version():
    etcd = kb.build_etcd(progress=lambda _line: None)
    out = _run([str(etcd), "--version"])
    assert f"etcd Version: {kb.ETCD_VERSION.lstrip('v')}" in out
