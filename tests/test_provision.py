"""Provisioning: the Go build cache, apt, host preparation and the composed ``provision``.

They run in seconds and change nothing on the host: builds go to a temporary cache, apt
and mount are replaced where they would change something.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sandcheck.catalog import BUILTIN, Catalog
from sandcheck.errors import ComponentError, UserError
from sandcheck.provision import apt, cargobuild, gobuild, hostprep, install, pins, tools
from sandcheck.provision.links import install_links
from sandcheck.provision.paths import cache_dir, path_dir
from sandcheck.provision.tools import GoTool, SourcePatch
from sandcheck.provision.versions import versions

PROVISION = Path(gobuild.__file__).parent
HAS_GO = shutil.which("go") is not None or os.access("/usr/local/go/bin/go", os.X_OK)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SANDCHECK_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_cache_dir_follows_environment(cache, monkeypatch):
    assert cache_dir() == cache and path_dir() == cache / "path"
    assert tools.CRI_TOOLS.target() == cache / "bin" / f"cri-tools-{tools.CRI_TOOLS.version}"
    monkeypatch.delenv("SANDCHECK_CACHE")
    assert cache_dir() == Path.home() / ".cache" / "sandcheck"


def test_paths_do_not_import_the_build_engine():
    """Runtime code imports paths, pins and the tool definitions; none drags in gobuild."""
    code = ("import sys\n"
            "import sandcheck.provision.paths, sandcheck.provision.pins\n"
            "import sandcheck.provision.kubernetes\n"
            "print(sorted(m for m in sys.modules if m.startswith('sandcheck.clusters.prov')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr
    assert "gobuild" not in out.stdout and "install" not in out.stdout, out.stdout


def test_every_version_literal_is_in_pins():
    """A version written anywhere but pins.py would escape the one place pins change."""
    version = re.compile(r"v\d+\.\d+\.\d+([-+.][\w.-]*)?")
    found = []
    for path in sorted(PROVISION.glob("*.py")):
        if path.name == "pins.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and version.fullmatch(node.value):
                found.append(f"{path.name}:{node.lineno}: {node.value}")
    assert not found


def test_versions_on_this_machine():
    v = versions()
    assert v["kernel"] == platform.release()
    assert v["cgroup_mode"] in {"v1", "v2", "hybrid", "none"}
    for tool in ("containerd", "runc", "crun"):
        if shutil.which(tool):
            assert v[tool] and v[tool][0].isdigit(), (tool, v[tool])
        else:
            assert v[tool] is None


@pytest.mark.skipif(
    not os.access(Path.home() / ".cache" / "sandcheck" / "path" / "crictl", os.X_OK),
    reason="crictl not provisioned in the default cache (run `sandcheck provision`)",
)
def test_provisioned_crictl_prints_the_pin_it_was_stamped_with(monkeypatch):
    """The version variables reach the binary: what it prints is the pin, not 'unknown'."""
    monkeypatch.delenv("SANDCHECK_CACHE", raising=False)
    assert versions()["crictl"] == pins.CRI_TOOLS_VERSION.lstrip("v")


# --- apt -----------------------------------------------------------------------------------


def test_apt_install_of_installed_package_is_a_noop(monkeypatch):
    if not apt.dpkg_installed("dpkg"):
        pytest.skip("not a Debian-family host (no dpkg-query or dpkg not installed)")
    monkeypatch.setattr(apt, "run", lambda *a, **kw: pytest.fail(f"apt was called: {a}"))
    lines: list[str] = []
    assert apt.apt_install(["dpkg", "dpkg"], progress=lines.append) == []
    assert lines == ["apt packages present (dpkg)"]


def test_apt_install_without_root_names_the_command(monkeypatch):
    monkeypatch.setattr(apt, "dpkg_installed", lambda p: False)
    monkeypatch.setattr(apt.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(apt.os, "geteuid", lambda: 1000)
    with pytest.raises(UserError, match=r"apt-get install sandcheck-nonexistent"):
        apt.apt_install(["sandcheck-nonexistent"])


def test_apt_install_without_apt_get(monkeypatch):
    monkeypatch.setattr(apt, "dpkg_installed", lambda p: False)
    monkeypatch.setattr(apt.shutil, "which", lambda name: None)
    with pytest.raises(UserError, match="no apt-get"):
        apt.apt_install(["foo"])


# --- the Go build engine, with go replaced ------------------------------------------------

HELLO = GoTool(name="hello", module="example.com/hello", version="v1.0.0",
               packages={"hello": "example.com/hello/cmd/hello",
                         "hi": "example.com/hello/cmd/hi/v2"},
               version_vars=("example.com/hello/version.Version",))


class FakeGo:
    """Stands in for go: ``run_logged`` writes each package's binary where go would."""

    def __init__(self, monkeypatch, module_dir: Path):
        self.builds: list[list[str]] = []
        monkeypatch.setattr(gobuild, "find_go", lambda: "go")
        monkeypatch.setattr(gobuild, "go_version", lambda go: (1, 22))
        monkeypatch.setattr(gobuild, "download", lambda go, env, module, version, log:
                            gobuild.Module(module_dir, "module example.com/hello\n", None))
        monkeypatch.setattr(gobuild, "run_logged", self.run_logged)

    def run_logged(self, argv, *, cwd, env, log, timeout, what, poll=None):
        self.builds.append(argv)
        if argv[1] == "install":
            out, packages = Path(env["GOBIN"]), [a.split("@")[0] for a in argv if "@" in a]
        else:
            out, packages = Path(argv[argv.index("-o") + 1]), argv[argv.index("-o") + 2:]
        for pkg in packages:
            exe = out / tools.exe_name(pkg, test_binary=argv[1:3] == ["test", "-c"])
            exe.write_text("#!/bin/sh\n")
            exe.chmod(0o755)


def test_a_stamp_written_by_a_build_is_read_back_and_reused(cache, tmp_path, monkeypatch):
    go = FakeGo(monkeypatch, tmp_path)
    lines: list[str] = []
    first = gobuild.build(HELLO, progress=lines.append)
    assert first == {"hello": HELLO.target() / "hello", "hi": HELLO.target() / "hi"}
    assert len(go.builds) == 1 and go.builds[0][1] == "install"
    assert "-X example.com/hello/version.Version=v1.0.0" in go.builds[0][2]
    stamp = gobuild.read_stamp(HELLO.target())
    assert stamp["version"] == "v1.0.0" and stamp["go"] == "1.22"
    again: list[str] = []
    assert gobuild.build(HELLO, progress=again.append) == first
    assert len(go.builds) == 1 and len(again) == 1 and "cached" in again[0]


@pytest.mark.parametrize("change", [
    {"version_vars": ()},
    {"tags": ("no_btrfs",)},
    {"link_vars": {"example.com/hello/version.Date": "{released}"}},
    {"patches": (SourcePatch("cmd/hello/main.go", "a", "b", "test"),)},
    {"build_module": tools.BuildModule(lambda gomod, version: gomod, revision=2)},
    {"test_binary": True},
])
def test_a_changed_recipe_invalidates_the_cached_build(cache, tmp_path, monkeypatch, change):
    FakeGo(monkeypatch, tmp_path)
    gobuild.build(HELLO, progress=lambda _: None)
    changed = dataclasses.replace(HELLO, **change)
    assert changed.target() == HELLO.target()  # same directory, so only the stamp tells
    assert gobuild.cached(HELLO) is not None
    assert gobuild.cached(changed) is None


def test_a_changed_pin_is_a_new_build(cache, tmp_path, monkeypatch):
    go = FakeGo(monkeypatch, tmp_path)
    gobuild.build(HELLO, progress=lambda _: None)
    newer = dataclasses.replace(HELLO, version="v1.0.1")
    assert gobuild.cached(newer) is None
    gobuild.build(newer, progress=lambda _: None)
    assert len(go.builds) == 2 and "example.com/hello/cmd/hello@v1.0.1" in go.builds[1]


def test_a_missing_binary_is_rebuilt(cache, tmp_path, monkeypatch):
    go = FakeGo(monkeypatch, tmp_path)
    gobuild.build(HELLO, progress=lambda _: None)
    (HELLO.target() / "hello").unlink()
    gobuild.build(HELLO, progress=lambda _: None)
    assert len(go.builds) == 2 and (HELLO.target() / "hello").is_file()


def test_stamps_of_the_earlier_tool_format_are_still_reused(cache):
    """A cache filled before the engine was unified (this JSON is what it wrote) is reused,
    so an upgrade does not rebuild containerd, gVisor or crictl."""
    tool = tools.CONTAINERD17
    tool.target().mkdir(parents=True)
    for exe in tool.binaries().values():
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)
    (tool.target() / ".stamp.json").write_text(json.dumps({
        "module": "github.com/containerd/containerd",
        "version": tool.version,
        "tags": ["no_btrfs"],
        "packages": {c: f"github.com/containerd/containerd/cmd/{c}"
                     for c in ("containerd", "containerd-shim-runc-v2", "ctr")},
        "version_vars": ["github.com/containerd/containerd/version.Version"],
        "from_source": True,
        "patches": [],
        "go": "1.26",
        "built": "2026-11-25T21:16:55Z",
        "build_seconds": 54.8,
    }))
    assert gobuild.cached(tool) == tool.binaries()


def test_a_test_binary_is_built_with_go_test_in_a_copy_of_the_module(cache, tmp_path,
                                                                     monkeypatch):
    """critest is cri-tools' e2e suite compiled by ``go test -c``: ``go install`` cannot take
    it, so it is built in a copy of the module and linked under its own name."""
    module = tmp_path / "module"
    (module / "cmd" / "suite").mkdir(parents=True)
    go = FakeGo(monkeypatch, module)
    suite = GoTool(name="suite", module="example.com/hello", version="v1.0.0",
                   packages={"suite": "example.com/hello/cmd/suite"}, test_binary=True)
    got = gobuild.build(suite, progress=lambda _: None)
    assert got == {"suite": suite.target() / "suite.test"}
    (argv,) = go.builds
    assert argv[1:3] == ["test", "-c"] and argv[-1] == "./cmd/suite"
    assert gobuild.read_stamp(suite.target())["test_binary"] is True


def test_the_test_binary_field_leaves_existing_stamps_as_they_were():
    """Tools that are not test binaries write no ``test_binary`` key: caches made before
    the field existed stay valid."""
    for tool in (tools.CRI_TOOLS, tools.CONTAINERD17, tools.GVISOR, tools.REGISTRY):
        assert "test_binary" not in gobuild.stamp_identity(tool)
    assert gobuild.stamp_identity(tools.CRITEST)["test_binary"] is True
    assert tools.CRITEST.binaries()["critest"].name == "critest.test"
    assert tools.CRITEST.version == tools.CRI_TOOLS.version == pins.CRI_TOOLS_VERSION


def test_missing_go_says_what_to_install(monkeypatch):
    monkeypatch.setattr(gobuild.shutil, "which", lambda name: None)
    monkeypatch.setattr(gobuild, "GO_FALLBACKS", ())
    with pytest.raises(UserError, match=r"apt-get install golang-go or install Go >= 1\.22"):
        gobuild.find_go()


def test_a_package_outside_the_module_is_refused(cache):
    bad = dataclasses.replace(HELLO, packages={"x": "example.com/other/x"})
    with pytest.raises(UserError, match="not in module"):
        gobuild.build(bad, progress=lambda _: None)


def test_a_failing_go_command_ends_with_its_log_tail(cache, tmp_path):
    log = tmp_path / "build.log"
    with pytest.raises(gobuild.GoBuildError, match=r"(?s)exited 3\n.*no such package") as err:
        gobuild.run_logged(["sh", "-c", "echo no such package >&2; exit 3"], cwd=tmp_path,
                           env=os.environ, log=log, timeout=30, what="building x")
    assert err.value.log_path == log and "# exit 3" in log.read_text()


def test_a_go_command_past_its_timeout_is_killed(cache, tmp_path):
    log = tmp_path / "build.log"
    marker = tmp_path / "survived"
    with pytest.raises(gobuild.GoBuildError, match="not within"):
        gobuild.run_logged(["sh", "-c", f"sleep 3; touch {marker}"], cwd=tmp_path,
                           env=os.environ, log=log, timeout=0.5, what="building x")
    assert not marker.exists()  # the process group was killed, not left running


def _fake_module(root: Path, source: str) -> Path:
    mod = root / "modcache" / "example.com" / "hello@v1.0.0"
    (mod / "cmd" / "hello").mkdir(parents=True)
    (mod / "go.mod").write_text("module example.com/hello\n\ngo 1.22\n")
    (mod / "cmd" / "hello" / "main.go").write_text(source)
    for path in (mod / "go.mod", mod / "cmd" / "hello" / "main.go"):
        path.chmod(0o444)  # like the module cache
    return mod


PATCH = SourcePatch("cmd/hello/main.go", 'println("v1")', 'println("v2")', "test")


def test_copy_module_patches_a_copy_and_keeps_the_cache(tmp_path):
    mod = _fake_module(tmp_path, 'package main\n\nfunc main() { println("v1") }\n')
    dest = tmp_path / "src"
    gobuild.copy_module(mod, dest, [PATCH], "hello-v1.0.0")
    assert 'println("v2")' in (dest / "cmd/hello/main.go").read_text()
    assert 'println("v1")' in (mod / "cmd/hello/main.go").read_text()
    assert (mod / "cmd/hello/main.go").stat().st_mode & 0o777 == 0o444
    assert (dest / "go.mod").samefile(mod / "go.mod")  # unpatched files are hard links


def test_copy_module_refuses_a_patch_that_no_longer_applies(tmp_path):
    mod = _fake_module(tmp_path, "package main\n\nfunc main() {}\n")
    with pytest.raises(ComponentError, match="found it 0 times"):
        gobuild.copy_module(mod, tmp_path / "s", [PATCH], "hello-v1.0.0")


@pytest.mark.skipif(not HAS_GO, reason="go not installed (apt-get install golang-go)")
def test_real_build_from_patched_source_then_from_its_stamp(tmp_path, monkeypatch):
    """go itself, through the patched-source path; the second call must not run go."""
    shared = cache_dir() / "go" / "build"  # reuse a warm Go build cache
    monkeypatch.setenv("SANDCHECK_CACHE", str(tmp_path / "cache"))
    if shared.is_dir():
        (tmp_path / "cache" / "go").mkdir(parents=True)
        (tmp_path / "cache" / "go" / "build").symlink_to(shared)
    mod = _fake_module(tmp_path, 'package main\n\nfunc main() { println("v1") }\n')
    monkeypatch.setattr(gobuild, "download", lambda go, env, module, version, log:
                        gobuild.Module(mod, (mod / "go.mod").read_text(), None))
    tool = GoTool(name="hello", module="example.com/hello", version="v1.0.0",
                  packages={"hello": "example.com/hello/cmd/hello"}, patches=(PATCH,))
    got = gobuild.build(tool, progress=lambda _: None)
    out = subprocess.run([str(got["hello"])], capture_output=True, text=True, timeout=30)
    assert out.stderr.strip() == "v2"
    assert not any((tmp_path / "cache" / "src").glob("*"))
    monkeypatch.setattr(gobuild, "find_go", lambda: pytest.fail("rebuilt"))
    assert gobuild.build(tool, progress=lambda _: None) == got


# --- links and host preparation ------------------------------------------------------------


def test_install_links_is_idempotent_and_safe(cache, tmp_path):
    exe = tmp_path / "shim"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    bin_dir = tmp_path / "links"
    lines: list[str] = []
    first = install_links({"containerd-shim-runsc-v1": exe}, bin_dir, progress=lines.append)
    again = install_links({"containerd-shim-runsc-v1": exe}, bin_dir, progress=lines.append)
    assert first == again == {"containerd-shim-runsc-v1": exe.resolve()}
    assert len(lines) == 1  # the second call changed nothing and says nothing
    (bin_dir / "runsc").write_text("a real file")
    with pytest.raises(UserError, match="not a link"):
        install_links({"runsc": exe}, bin_dir)
    assert (bin_dir / "runsc").read_text() == "a real file"


def test_install_links_default_is_the_cache_path_dir(cache, tmp_path):
    exe = tmp_path / "crictl"
    exe.write_text("")
    install_links({"crictl": exe}, progress=lambda _: None)
    assert (cache / "path" / "crictl").is_symlink()


def test_has_capability_reads_the_effective_set():
    text = "Name:\tx\nCapEff:\t000001fffeffffff\n"  # this project's VM: all but SYS_RESOURCE
    assert hostprep.has_capability(21, text)  # CAP_SYS_ADMIN
    assert not hostprep.has_capability(hostprep.CAP_SYS_RESOURCE, text)
    assert not hostprep.has_capability(0, "Name:\tx\n")


def test_prepare_cgroups_does_nothing_off_hybrid(monkeypatch):
    monkeypatch.setattr(hostprep, "cgroup_mode", lambda mountinfo=None: "v2")
    monkeypatch.setattr(hostprep, "run", lambda *a, **kw: pytest.fail("must not mount"))
    assert hostprep.prepare_cgroups_for_crun() == []


def test_prepare_cgroups_plan_on_this_host():
    """A dry run: on a hybrid host with cgroup2 controllers it plans one mount each."""
    plan = hostprep.prepare_cgroups_for_crun(dry_run=True, progress=lambda _: None)
    if hostprep.cgroup_mode() != "hybrid":
        assert plan == []
    else:
        assert plan == [f"mount -t cgroup -o {c} cgroup /sys/fs/cgroup/{c}"
                        for c in hostprep.cgroup2_controllers()]


def test_prepare_cgroups_without_root_prints_the_commands(monkeypatch):
    monkeypatch.setattr(hostprep, "cgroup_mode", lambda mountinfo=None: "hybrid")
    monkeypatch.setattr(hostprep, "cgroup2_controllers", lambda: ["hugetlb"])
    monkeypatch.setattr(hostprep.os, "geteuid", lambda: 1000)
    with pytest.raises(UserError, match=r"mount -t cgroup -o hugetlb cgroup"):
        hostprep.prepare_cgroups_for_crun()


# --- provision(), with the steps recorded instead of run ----------------------------------


class Steps:
    def __init__(self, monkeypatch, on_path: set[str] = frozenset()):
        self.apt: list[str] = []
        self.built: list[str] = []
        self.cgroups = 0
        monkeypatch.setattr(install, "apt_install", lambda pkgs, progress: self.apt.extend(pkgs))
        monkeypatch.setattr(install, "build", self.build)
        monkeypatch.setattr(install.cargobuild, "build", self.build_crate)
        monkeypatch.setattr(install, "install_links", lambda b, d=None, progress=None: dict(b))
        monkeypatch.setattr(install, "which", lambda name, extra=(): (
            f"/usr/bin/{name}" if name in on_path else None))
        monkeypatch.setattr(install, "versions", dict)
        monkeypatch.setattr(install, "prepare_cgroups_for_crun", self.prepare)

    def build(self, tool, progress):
        self.built.append(tool.name)
        return {link: Path("/built") / link for link in tool.packages}

    def build_crate(self, tool, progress):
        self.built.append(tool.name)
        return {name: Path("/built") / name for name in tool.executables}

    def prepare(self, progress):
        self.cgroups += 1
        return ["mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb"]


def test_provision_installs_the_packages_the_catalog_names(cache, monkeypatch, capsys):
    steps = Steps(monkeypatch, on_path={"runc", "crun", "containerd-shim-runc-v2"})
    lines: list[str] = []
    out = install.provision([BUILTIN["runc"], BUILTIN["crun"]], containerd2=False,
                            progress=lines.append)
    assert {"runc", "crun", *install.BASE_PACKAGES} == set(steps.apt)
    assert steps.built == ["cri-tools"]  # no gVisor, no containerd 1.7 without runsc
    assert out["runtimes"]["crun"]["available"] is True
    assert out["runtimes"]["crun"]["notes"] == [BUILTIN["crun"].caveat]
    assert steps.cgroups == 1 and out["host_changes"]
    assert capsys.readouterr().err == ""  # every line went to the progress given


def test_provision_reads_packages_of_a_user_catalog(cache, monkeypatch, tmp_path):
    (tmp_path / "extra.toml").write_text(
        '[runtimes.youki]\npackages = ["youki"]\n')
    rt = Catalog.load(tmp_path / "extra.toml").get("youki")
    steps = Steps(monkeypatch)
    install.provision([rt], containerd2=False, progress=lambda _: None)
    assert "youki" in steps.apt and "youki" in steps.built  # the packages, and the crate


def test_provision_builds_gvisor_and_containerd17_for_runsc(cache, monkeypatch):
    steps = Steps(monkeypatch, on_path={"runsc", "containerd-shim-runsc-v1"})
    out = install.provision([BUILTIN["runsc"]], containerd2=False, shim_oom_tolerant=True,
                            progress=lambda _: None)
    assert steps.built == ["cri-tools", "gvisor", "gvisor-shim-oom-tolerant", "containerd"]
    assert out["containerd_path_dirs"] == {"1.7": str(cache / "path-containerd17")}
    assert install.SHIM_OOM_NOTE in out["runtimes"]["runsc"]["notes"]


def test_provision_reports_kata_unavailable_with_the_catalogs_reason(cache, monkeypatch):
    steps = Steps(monkeypatch)
    lines: list[str] = []
    out = install.provision([BUILTIN["kata"]], containerd2=False, progress=lines.append)
    assert out["runtimes"]["kata"] == {
        "available": False,
        "binaries": {b: None for b in BUILTIN["kata"].binaries},
        "reason": BUILTIN["kata"].unavailable,
    }
    assert f"kata unavailable: {BUILTIN['kata'].unavailable}" in lines
    assert steps.cgroups == 0 and out["containerd_path_dirs"] == {}


def test_provision_says_a_built_runtime_is_missing_when_its_binary_is(cache, monkeypatch):
    Steps(monkeypatch, on_path={"runsc"})  # e.g. Debian's runsc: no shim
    out = install.provision([BUILTIN["runsc"]], containerd2=False, shim_oom_tolerant=False,
                            progress=lambda _: None)
    entry = out["runtimes"]["runsc"]
    assert entry["available"] is False
    assert entry["reason"] == "containerd-shim-runsc-v1 not on PATH after provisioning"


# --- the cargo build engine (youki), with cargo replaced ------------------------------------

class FakeCargo:
    """Stands in for cargo: ``run_logged`` installs each binary where ``--root`` says."""

    def __init__(self, monkeypatch, rust=(1, 95)):
        self.builds: list[list[str]] = []
        self.apt: list[str] = []
        monkeypatch.setattr(cargobuild, "find_cargo", lambda: "cargo")
        monkeypatch.setattr(cargobuild, "rust_version", lambda cargo: rust)
        monkeypatch.setattr(cargobuild, "run_logged", self.run_logged)
        monkeypatch.setattr(cargobuild, "apt_install", lambda pkgs, progress: self.apt.extend(pkgs))

    def run_logged(self, argv, *, cwd, env, log, timeout, what, poll=None):
        self.builds.append(argv)
        assert env["CARGO_TARGET_DIR"] == str(cache_dir() / "cargo" / "target")
        bin_dir = Path(argv[argv.index("--root") + 1]) / "bin"
        bin_dir.mkdir(parents=True)
        exe = bin_dir / "youki"
        exe.write_text("#!/bin/sh\necho youki version 0.7.0\n")
        exe.chmod(0o755)
        (bin_dir.parent / ".crates.toml").write_text("")


def test_youki_is_built_once_from_crates_io_with_its_pinned_features(cache, monkeypatch):
    cargo = FakeCargo(monkeypatch)
    lines: list[str] = []
    first = cargobuild.build(tools.YOUKI, progress=lines.append)
    assert first == {"youki": cache / "bin" / f"youki-{pins.YOUKI_VERSION}" / "youki"}
    (argv,) = cargo.builds
    assert argv[:5] == ["cargo", "install", "youki", "--version", pins.YOUKI_VERSION]
    assert "--locked" in argv and "--no-default-features" in argv
    assert argv[argv.index("--features") + 1] == "v1,v2,seccomp"
    assert cargo.apt == ["libseccomp-dev", "pkg-config"]
    stamp = gobuild.read_stamp(tools.YOUKI.target())
    assert stamp["features"] == ["seccomp", "v1", "v2"] and stamp["rust"] == "1.95"
    assert sorted(p.name for p in tools.YOUKI.target().iterdir()) == [".stamp.json", "youki"]
    again: list[str] = []
    assert cargobuild.build(tools.YOUKI, progress=again.append) == first
    assert len(cargo.builds) == 1 and len(cargo.apt) == 2  # no cargo, no apt the second time
    assert len(again) == 1 and "cached" in again[0]


def test_other_features_are_another_build(cache, monkeypatch):
    FakeCargo(monkeypatch)
    cargobuild.build(tools.YOUKI, progress=lambda _: None)
    assert cargobuild.cached(tools.YOUKI) is not None
    assert cargobuild.cached(dataclasses.replace(tools.YOUKI, features=("v2",))) is None
    assert cargobuild.cached(dataclasses.replace(tools.YOUKI, version="0.7.1")) is None


def test_the_youki_features_suit_this_hosts_cgroups():
    """youki drives cgroup v1 (and hybrid) hosts only with v1, unified ones with v2."""
    mode = hostprep.cgroup_mode()
    assert "v2" in pins.YOUKI_FEATURES and "seccomp" in pins.YOUKI_FEATURES
    if mode in ("v1", "hybrid"):
        assert "v1" in pins.YOUKI_FEATURES
    assert "v1,v2,seccomp" in BUILTIN["youki"].caveat  # the catalog says what the pin builds


def test_an_old_rust_says_how_to_get_a_new_one(monkeypatch):
    monkeypatch.setattr(cargobuild.shutil, "which", lambda name: "/usr/bin/cargo")
    monkeypatch.setattr(cargobuild, "rust_version", lambda cargo: (1, 63))
    with pytest.raises(UserError, match=r"Rust 1\.63; the pinned crates need Rust >= 1\.85: "
                                        r"install a current Rust with rustup"):
        cargobuild.find_cargo()


def test_provision_builds_youki_and_links_it(cache, monkeypatch):
    steps = Steps(monkeypatch, on_path={"youki", "containerd-shim-runc-v2"})
    monkeypatch.setattr(install.cargobuild, "build", lambda tool, progress: (
        steps.built.append(tool.name) or {"youki": Path("/built/youki")}))
    out = install.provision([BUILTIN["youki"]], containerd2=False, progress=lambda _: None)
    assert steps.built == ["cri-tools", "youki"]
    assert out["binaries"]["youki"] == "/built/youki"
    assert out["runtimes"]["youki"]["available"] is True
    assert steps.cgroups == 0  # youki needs no hugetlb move, unlike crun


def test_a_failed_youki_build_leaves_it_unavailable_with_why(cache, monkeypatch):
    Steps(monkeypatch)

    def no_cargo(tool, progress):
        raise UserError("cargo not found: install a current Rust with rustup")

    monkeypatch.setattr(install.cargobuild, "build", no_cargo)
    out = install.provision([BUILTIN["youki"], BUILTIN["runc"]], containerd2=False,
                            progress=lambda _: None)
    assert out["runtimes"]["youki"]["reason"] == (
        "youki, containerd-shim-runc-v2 not on PATH after provisioning: its build failed: "
        "cargo not found: install a current Rust with rustup")


@pytest.mark.skipif(
    not os.access(Path.home() / ".cache" / "sandcheck" / "path" / "youki", os.X_OK),
    reason="youki not provisioned in the default cache (run `sandcheck provision --runtimes "
    "youki`)")
def test_provisioned_youki_is_the_pin_with_its_features(monkeypatch):
    monkeypatch.delenv("SANDCHECK_CACHE", raising=False)
    assert versions()["youki"] == pins.YOUKI_VERSION
    out = subprocess.run([str(path_dir() / "youki"), "features"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert cargobuild.cached(tools.YOUKI) is not None
