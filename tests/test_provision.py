"""Tests of clusters.provision that run in seconds and change nothing on the host."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from sandcheck.clusters import provision
from sandcheck.clusters.errors import ComponentError, UserError

HYBRID = """\
24 1 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
25 24 0:23 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
26 24 0:24 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
"""
UNIFIED = "30 1 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
LEGACY = "26 24 0:24 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SANDCHECK_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_cache_dir_follows_environment(cache):
    assert provision.cache_dir() == cache
    assert provision.path_dir() == cache / "path"


def test_cache_dir_default(monkeypatch):
    monkeypatch.delenv("SANDCHECK_CACHE", raising=False)
    assert provision.cache_dir() == Path.home() / ".cache" / "sandcheck"


@pytest.mark.parametrize(
    "text,mode", [(HYBRID, "hybrid"), (UNIFIED, "v2"), (LEGACY, "v1"), ("", "none")]
)
def test_cgroup_mode(text, mode):
    assert provision.cgroup_mode(text) == mode


def test_cgroup_mode_of_this_host_is_known():
    assert provision.cgroup_mode() in {"v1", "v2", "hybrid", "none"}


def test_versions_on_this_machine():
    v = provision.versions()
    assert v["kernel"] == platform.release()
    assert v["cgroup_mode"] == provision.cgroup_mode()
    assert isinstance(v["cgroup2_controllers"], list)
    for tool in ("containerd", "runc", "crun"):
        if shutil.which(tool):
            assert v[tool] and v[tool][0].isdigit(), (tool, v[tool])
        else:
            assert v[tool] is None


def test_apt_install_of_installed_package_is_a_noop(monkeypatch):
    if shutil.which("dpkg-query") is None or not provision.dpkg_installed("dpkg"):
        pytest.skip("not a Debian-family host (no dpkg-query or dpkg not installed)")

    def no_apt(*a, **kw):  # apt-get must not run for a package that is present
        raise AssertionError(f"apt was called: {a}")

    monkeypatch.setattr(provision, "_run", no_apt)
    start = time.monotonic()
    assert provision.apt_install(["dpkg", "dpkg"]) == []
    assert time.monotonic() - start < 10


def test_apt_install_without_root_names_the_command(monkeypatch):
    monkeypatch.setattr(provision, "dpkg_installed", lambda p: False)
    monkeypatch.setattr(provision.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(provision.os, "geteuid", lambda: 1000)
    with pytest.raises(UserError, match=r"apt-get install sandcheck-nonexistent"):
        provision.apt_install(["sandcheck-nonexistent"])


def test_apt_install_without_apt_get(monkeypatch):
    monkeypatch.setattr(provision, "dpkg_installed", lambda p: False)
    monkeypatch.setattr(provision.shutil, "which", lambda name: None)
    with pytest.raises(UserError, match="no apt-get"):
        provision.apt_install(["foo"])


def _fake_build(cache: Path, tool: provision.GoTool) -> Path:
    target = cache / "bin" / f"{tool.name}-{tool.version}"
    target.mkdir(parents=True)
    for pkg in tool.packages.values():
        exe = target / pkg.rsplit("/", 1)[-1]
        exe.write_text("#!/bin/sh\necho fake\n")
        exe.chmod(0o755)
    stamp = {
        "module": tool.module,
        "version": tool.version,
        "tags": sorted(tool.tags),
        "packages": dict(sorted(tool.packages.items())),
        "version_vars": sorted(tool.version_vars),
        "built": "earlier",
    }
    (target / ".stamp.json").write_text(json.dumps(stamp))
    return target


def test_go_build_reuses_stamped_binaries(cache, monkeypatch):
    target = _fake_build(cache, provision.GVISOR)

    def no_go():
        raise AssertionError("go must not run when the stamp matches")

    monkeypatch.setattr(provision, "find_go", no_go)
    start = time.monotonic()
    got = provision.build_tool(provision.GVISOR)
    assert time.monotonic() - start < 1
    assert got == {"runsc": target / "runsc", "containerd-shim-runsc-v1": target / "shim"}


def test_go_build_rebuilds_when_the_stamp_differs(cache, monkeypatch):
    target = _fake_build(cache, provision.CRI_TOOLS)
    stamp = json.loads((target / ".stamp.json").read_text())
    stamp["tags"] = ["other"]
    (target / ".stamp.json").write_text(json.dumps(stamp))
    calls = []

    def fake_go():
        calls.append(1)
        raise UserError("go not found")

    monkeypatch.setattr(provision, "find_go", fake_go)
    with pytest.raises(UserError):
        provision.build_tool(provision.CRI_TOOLS)
    assert calls == [1]


def test_go_build_rebuilds_when_a_binary_is_missing(cache, monkeypatch):
    target = _fake_build(cache, provision.CONTAINERD2)
    (target / "ctr").unlink()
    monkeypatch.setattr(provision, "find_go", lambda: (_ for _ in ()).throw(UserError("no go")))
    with pytest.raises(UserError, match="no go"):
        provision.build_tool(provision.CONTAINERD2)


def test_missing_go_says_what_to_install(cache, monkeypatch):
    monkeypatch.setattr(provision.shutil, "which", lambda name: None)
    monkeypatch.setattr(provision, "GO_FALLBACKS", ())
    with pytest.raises(UserError, match=r"apt-get install golang-go or install Go >= 1\.22"):
        provision.go_build("example.com/m", ["example.com/m/cmd/x"], "v1.0.0", "x")


def test_go_build_rejects_a_package_outside_the_module(cache):
    with pytest.raises(UserError, match="not in module"):
        provision.go_build("example.com/m", ["example.com/other/x"], "v1.0.0", "x")


def test_has_capability_reads_the_effective_set():
    text = "Name:\tx\nCapEff:\t000001fffeffffff\n"
    assert provision.has_capability(21, text)  # CAP_SYS_ADMIN
    assert not provision.has_capability(provision.CAP_SYS_RESOURCE, text)
    assert not provision.has_capability(0, "Name:\tx\n")


def _fake_module(root: Path, source: str) -> Path:
    mod = root / "modcache" / "example.com" / "hello@v1.0.0"
    (mod / "cmd" / "hello").mkdir(parents=True)
    (mod / "go.mod").write_text("module example.com/hello\n\ngo 1.22\n")
    (mod / "cmd" / "hello" / "main.go").write_text(source)
    for path in (mod / "go.mod", mod / "cmd" / "hello" / "main.go"):
        path.chmod(0o444)  # like the module cache
    return mod


def _fake_download(monkeypatch, mod: Path) -> None:
    real_run = provision._run

    def run(argv, *a, **kw):
        if list(argv[1:3]) == ["mod", "download"]:
            return subprocess.CompletedProcess(argv, 0, json.dumps({"Dir": str(mod)}), "")
        return real_run(argv, *a, **kw)

    monkeypatch.setattr(provision, "_run", run)


PATCH = provision.SourcePatch("cmd/hello/main.go", 'println("v1")', 'println("v2")', "test")


def test_prepare_source_patches_a_copy_and_keeps_the_cache(tmp_path, monkeypatch):
    mod = _fake_module(tmp_path, 'package main\n\nfunc main() { println("v1") }\n')
    _fake_download(monkeypatch, mod)
    dest = tmp_path / "src"
    provision._prepare_source("go", "example.com/hello", "v1.0.0", dest, [PATCH], {})
    assert 'println("v2")' in (dest / "cmd/hello/main.go").read_text()
    assert 'println("v1")' in (mod / "cmd/hello/main.go").read_text()
    assert (mod / "cmd/hello/main.go").stat().st_mode & 0o777 == 0o444
    assert (dest / "go.mod").samefile(mod / "go.mod")  # unpatched files are hard links


def test_prepare_source_refuses_a_patch_that_no_longer_applies(tmp_path, monkeypatch):
    mod = _fake_module(tmp_path, "package main\n\nfunc main() {}\n")
    _fake_download(monkeypatch, mod)
    with pytest.raises(ComponentError, match="found it 0 times"):
        provision._prepare_source("go", "example.com/hello", "v1.0.0", tmp_path / "s", [PATCH], {})


@pytest.mark.skipif(
    shutil.which("go") is None and not os.access("/usr/local/go/bin/go", os.X_OK),
    reason="go not installed (apt-get install golang-go)",
)
def test_go_build_from_patched_source(tmp_path, monkeypatch):
    """A real build of a tiny module through the source path, then the cached path."""
    shared = provision.cache_dir() / "go" / "build"  # reuse a warm Go build cache
    monkeypatch.setenv("SANDCHECK_CACHE", str(tmp_path / "cache"))
    if shared.is_dir():
        (tmp_path / "cache" / "go").mkdir(parents=True)
        (tmp_path / "cache" / "go" / "build").symlink_to(shared)
    mod = _fake_module(tmp_path, 'package main\n\nfunc main() { println("v1") }\n')
    _fake_download(monkeypatch, mod)
    got = provision.go_build(
        "example.com/hello", ["example.com/hello/cmd/hello"], "v1.0.0", "hello", patches=[PATCH]
    )
    out = subprocess.run([str(got["hello"])], capture_output=True, text=True, timeout=30)
    assert out.stderr.strip() == "v2"
    assert not (tmp_path / "cache" / "src").exists() or not any(
        (tmp_path / "cache" / "src").iterdir()
    )
    monkeypatch.setattr(provision, "find_go", lambda: pytest.fail("rebuilt"))
    assert (
        provision.go_build(
            "example.com/hello", ["example.com/hello/cmd/hello"], "v1.0.0", "hello", patches=[PATCH]
        )
        == got
    )


def test_install_links_is_idempotent_and_safe(cache, tmp_path):
    exe = tmp_path / "shim"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    bin_dir = tmp_path / "links"
    first = provision.install_links({"containerd-shim-runsc-v1": exe}, bin_dir)
    again = provision.install_links({"containerd-shim-runsc-v1": exe}, bin_dir)
    assert first == again == {"containerd-shim-runsc-v1": exe.resolve()}
    link = bin_dir / "containerd-shim-runsc-v1"
    assert link.is_symlink() and link.resolve() == exe.resolve()
    (bin_dir / "runsc").write_text("a real file")
    with pytest.raises(UserError, match="not a link"):
        provision.install_links({"runsc": exe}, bin_dir)
    assert (bin_dir / "runsc").read_text() == "a real file"


def test_install_links_default_is_the_cache_path_dir(cache, tmp_path):
    exe = tmp_path / "crictl"
    exe.write_text("")
    provision.install_links({"crictl": exe})
    assert (cache / "path" / "crictl").is_symlink()


def test_prepare_cgroups_does_nothing_off_hybrid(monkeypatch):
    monkeypatch.setattr(provision, "cgroup_mode", lambda mountinfo=None: "v2")
    monkeypatch.setattr(provision, "_run", lambda *a, **kw: pytest.fail("must not mount"))
    assert provision.prepare_cgroups_for_crun() == []


def test_prepare_cgroups_plan_on_this_host():
    """A dry run: on a hybrid host with cgroup2 controllers it plans one mount each."""
    plan = provision.prepare_cgroups_for_crun(dry_run=True)
    if provision.cgroup_mode() != "hybrid":
        assert plan == []
    else:
        assert plan == [
            f"mount -t cgroup -o {c} cgroup /sys/fs/cgroup/{c}"
            for c in provision.cgroup2_controllers()
        ]


def test_prepare_cgroups_without_root_prints_the_commands(monkeypatch):
    monkeypatch.setattr(provision, "cgroup_mode", lambda mountinfo=None: "hybrid")
    monkeypatch.setattr(provision, "cgroup2_controllers", lambda: ["hugetlb"])
    monkeypatch.setattr(provision.os, "geteuid", lambda: 1000)
    with pytest.raises(UserError, match=r"mount -t cgroup -o hugetlb cgroup"):
        provision.prepare_cgroups_for_crun()


def test_provision_reports_a_runtime_it_cannot_install(cache, monkeypatch):
    monkeypatch.setattr(provision, "apt_install", lambda pkgs: [])
    monkeypatch.setattr(provision, "build_tool", lambda tool: {})
    monkeypatch.setattr(provision, "_which", lambda name, extra=(): None)
    out = provision.provision(["youki"], containerd2=False)
    assert out["runtimes"]["youki"]["available"] is False
    assert "install it by hand" in out["runtimes"]["youki"]["reason"]


def test_provision_reports_kata_unavailable(cache, monkeypatch):
    monkeypatch.setattr(provision, "apt_install", lambda pkgs: [])
    monkeypatch.setattr(provision, "build_tool", lambda tool: {})
    out = provision.provision(["kata"], containerd2=False)
    assert out["runtimes"]["kata"]["available"] is False
    assert "Kata" in out["runtimes"]["kata"]["reason"]
    assert out["host_changes"] == []
    assert out["containerd_path_dirs"] == {}


def test_pinned_tools_are_consistent():
    assert provision.GVISOR_SHIM_OOM_TOLERANT.version == provision.GVISOR.version
    for tool in (
        provision.GVISOR,
        provision.CRI_TOOLS,
        provision.CONTAINERD2,
        provision.CONTAINERD17,
        provision.GVISOR_SHIM_OOM_TOLERANT,
    ):
        for pkg in tool.packages.values():
            assert pkg.startswith(tool.module + "/"), pkg


@pytest.mark.skipif(
    not os.access(provision.cache_dir() / "path" / "crictl", os.X_OK),
    reason="crictl not provisioned in the default cache (run provision)",
)
def test_provisioned_crictl_reports_its_pinned_version(monkeypatch):
    monkeypatch.delenv("SANDCHECK_CACHE", raising=False)
    assert provision.versions()["crictl"] == provision.CRI_TOOLS.version.lstrip("v")
