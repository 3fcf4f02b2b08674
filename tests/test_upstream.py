"""The upstream suites (critest, Kubernetes' e2e): their JUnit reading, the judgment of
declared deviations and backend limits, the stand-in images and where each name's pull goes,
and the offline guarantees; then critest itself, a small focus of it, on the node backend for
runc, and e2e.test, a small focus of it, on the local backend.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from sandcheck.catalog import BUILTIN, Catalog
from sandcheck.clusters import registry
from sandcheck.clusters.kind import images as kindimages
from sandcheck.containerd import hosts
from sandcheck.errors import UserError
from sandcheck.host import sysvipc
from sandcheck.provision import pins
from sandcheck.provision.gobuild import Module, imports_of_tests
from sandcheck.provision.paths import cache_dir
from sandcheck.timeouts import TIMEOUTS
from sandcheck.upstream import criimages, e2e, e2eimages
from sandcheck.upstream.critest import OFFLINE_SKIPS, critest_argv, skip_regex
from sandcheck.upstream.junit import read_junit, spec_name
from sandcheck.upstream.offline import registry_target, remote_attempts
from sandcheck.upstream.verdicts import STALE, check_id, judge, judge_all, slug

HOSTIPC = "Security Context NamespaceOption runtime should support HostIpc is true"
DIGEST = ("Image Manager public image with digest should be pulled and removed [Conformance] "
          "[Serial]")
UNSAFE = "PodSandbox runtime should support sysctls should support unsafe sysctls"
FAILURE = ('message="Expected&#xA;    &lt;string&gt;: x&#xA;to contain substring 7" '
           'type="failed">[FAILED] Expected&#xA;In [It] at: sigs.k8s.io/cri-tools/pkg/'
           'validate/security_context_linux.go:180 @ 11/26/26&#xA;')
JUNIT = f"""<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="6" disabled="1" errors="0" failures="2" time="3.5">
  <testsuite name="CRI validation" tests="6" skipped="2" failures="2" time="3.5">
    <testcase name="[BeforeSuite]" classname="CRI validation" status="passed" time="0.1">
      <system-err>INFO: Testing context container image list</system-err>
    </testcase>
    <testcase name="[It] [k8s.io] Container runtime should support execSync [Conformance]"
              classname="CRI validation" status="passed" time="0.4"/>
    <testcase name="[It] [k8s.io] {HOSTIPC}" status="failed" time="1.5">
      <failure {FAILURE}</failure>
      <system-err>STEP: create podSandbox for security context HostIPC is NODE</system-err>
    </testcase>
    <testcase name="[It] [k8s.io] {UNSAFE}" status="panicked" time="0.2">
      <failure message="runtime error: index out of range" type="panicked"></failure>
    </testcase>
    <testcase name="[It] [k8s.io] NRI pod sandbox lifecycle should receive RunPodSandbox [Serial]"
              classname="CRI validation" status="skipped" time="0.001">
      <skipped message="skipped - NRI socket not configured (use -nri-socket flag)"></skipped>
    </testcase>
    <testcase name="[It] [k8s.io] {DIGEST}" status="skipped" time="0">
      <skipped message="skipped"></skipped>
    </testcase>
    <testcase name="[It] [k8s.io] Streaming runtime should support attach [Conformance]"
              classname="CRI validation" status="skipped" time="0">
      <skipped message="skipped"></skipped>
    </testcase>
  </testsuite>
</testsuites>
"""


@pytest.fixture
def specs(tmp_path):
    path = tmp_path / "junit.xml"
    path.write_text(JUNIT)
    return read_junit(path)


# --- JUnit ----------------------------------------------------------------------------------


def test_junit_gives_each_spec_its_status_message_and_timeline(specs):
    by_name = {s.name: s for s in specs}
    assert by_name["[BeforeSuite]"].suite_node
    execsync = by_name["Container runtime should support execSync [Conformance]"]
    assert (execsync.status, execsync.seconds, execsync.suite_node) == ("passed", 0.4, False)
    hostipc = by_name[HOSTIPC]
    assert hostipc.status == "failed" and hostipc.seconds == 1.5
    assert hostipc.message.startswith("Expected\n    <string>: x\nto contain substring 7")
    assert hostipc.message.endswith("security_context_linux.go:180 @ 11/26/26")
    assert "HostIPC is NODE" in hostipc.output
    panicked = by_name[UNSAFE]
    assert panicked.status == "failed" and "index out of range" in panicked.message
    nri = by_name["NRI pod sandbox lifecycle should receive RunPodSandbox [Serial]"]
    assert (nri.status, nri.filtered) == ("skipped", False)
    assert nri.message == "NRI socket not configured (use -nri-socket flag)"
    attach = by_name["Streaming runtime should support attach [Conformance]"]
    assert (attach.status, attach.filtered) == ("skipped", True)


def test_an_unreadable_report_says_which(tmp_path):
    (tmp_path / "junit.xml").write_text("<testsuites><testcase")
    with pytest.raises(Exception, match="junit.xml cannot be read"):
        read_junit(tmp_path / "junit.xml")


def test_spec_names_drop_ginkgo_and_cri_tools_tags():
    assert spec_name("[It] [k8s.io] Runtime info runtime should return version info "
                     "[Conformance]") == "Runtime info runtime should return version info " \
                                        "[Conformance]"
    assert slug(HOSTIPC) == ("security-context-namespaceoption-runtime-should-support-"
                             "hostipc-is-true")
    assert check_id("critest", HOSTIPC) == "critest." + slug(HOSTIPC)


# --- deviations -----------------------------------------------------------------------------


def test_a_declared_failure_is_a_deviation_an_undeclared_one_fails(specs):
    hostipc = next(s for s in specs if s.name == HOSTIPC)
    undeclared = judge(hostipc, {}, "critest")
    assert (undeclared.status, undeclared.declared) == ("failed", None)
    declared = judge(hostipc, {HOSTIPC: "gVisor: host IPC namespace"}, "critest")
    assert declared.status == "deviation" and declared.declared == "gVisor: host IPC namespace"
    assert declared.message.startswith("declared deviation (gVisor: host IPC namespace): Exp")
    by_id = judge(hostipc, {check_id("critest", HOSTIPC): "by its check id"}, "critest")
    assert by_id.status == "deviation"


def test_a_declared_deviation_that_passes_is_reported_so_the_list_can_shrink(specs):
    execsync = next(s for s in specs if s.status == "passed" and not s.suite_node)
    v = judge(execsync, {execsync.name: "an old note"}, "critest")
    assert v.status == "passed" and v.stale and STALE in v.message and "an old note" in v.message
    assert not judge(execsync, {}, "critest").stale


def test_judge_all_reports_offline_skips_and_leaves_out_what_a_focus_left_out(specs):
    verdicts = {v.spec.name: v for v in judge_all(specs, {HOSTIPC: "src"}, "critest",
                                                  OFFLINE_SKIPS)}
    assert "[BeforeSuite]" not in verdicts
    assert "Streaming runtime should support attach [Conformance]" not in verdicts
    digest = verdicts[DIGEST]
    assert digest.status == "skipped" and "not run offline" in digest.message
    assert verdicts[HOSTIPC].status == "deviation"
    assert sorted(v.status for v in verdicts.values()) == [
        "deviation", "failed", "passed", "skipped", "skipped"]


def test_runc_and_crun_declare_no_deviation_and_runsc_names_its_sources():
    for name in ("runc", "crun"):
        assert BUILTIN[name].upstream_deviations == {}
    runsc = BUILTIN["runsc"].upstream_deviations["critest"]
    assert runsc and all(source.strip() for source in runsc.values())


def test_a_catalog_file_adds_and_removes_deviations(tmp_path):
    path = tmp_path / "vendor.toml"
    spec = next(iter(BUILTIN["runsc"].upstream_deviations["critest"]))
    path.write_text(f"""
[runtimes.vendor]
base = "runsc"
handler = "vendor"
[runtimes.vendor.upstream_deviations.critest]
"{spec}" = ""
"Streaming runtime should support attach" = "vendor docs, section 4"
""")
    vendor = Catalog.load(path).get("vendor")
    assert spec not in vendor.upstream_deviations["critest"]
    assert vendor.upstream_deviations["critest"]["Streaming runtime should support attach"] \
        == "vendor docs, section 4"
    path.write_text('[runtimes.vendor]\nbase = "runc"\nupstream_deviations = { x = "y" }\n')
    with pytest.raises(UserError, match="one table per suite"):
        Catalog.load(path)


# --- critest's invocation ---------------------------------------------------------------------


def test_critest_runs_offline_skips_out_and_takes_the_focus():
    argv = critest_argv(Path("/c/critest"), "unix:///w/containerd.sock", "runsc",
                        Path("/r/junit.xml"), focus="Streaming")
    assert "--runtime-endpoint=unix:///w/containerd.sock" in argv
    assert "--image-endpoint=unix:///w/containerd.sock" in argv
    assert "--runtime-handler=runsc" in argv and "--ginkgo.junit-report=/r/junit.xml" in argv
    assert "--ginkgo.focus=Streaming" in argv
    skip = next(a for a in argv if a.startswith("--ginkgo.skip="))
    assert re.search(skip.split("=", 1)[1], "Image Manager public image with digest should "
                     "be pulled and removed [Conformance]")
    assert skip_regex(["a.b", "c"]) == r"a\.b|c"


# --- the images and where their pulls go -------------------------------------------------------


def test_image_names_map_to_the_same_repository_and_tag_on_the_registry():
    assert criimages.split_reference("gcr.io/k8s-staging-cri-tools/test-image-tag:test") == (
        "gcr.io", "k8s-staging-cri-tools/test-image-tag", "test")
    assert criimages.split_reference("gcr.io/k8s-staging-cri-tools/test-image-latest") == (
        "gcr.io", "k8s-staging-cri-tools/test-image-latest", "latest")
    assert criimages.full_name("registry.k8s.io/pause") == "registry.k8s.io/pause:latest"
    one = registry_target("127.0.0.1:5000", "registry.k8s.io/pause:3.9")
    other = registry_target("127.0.0.1:5000", "k8s.gcr.io/pause:3.9")
    assert str(one) == str(other) == "127.0.0.1:5000/pause:3.9"


def test_every_name_is_imported_or_pulled_once():
    names = [n for s in criimages.STAND_INS for n in s.names]
    assert len(names) == len(set(names))
    pulled = {n for s in criimages.STAND_INS if s.pulled for n in s.names}
    run = {n for s in criimages.STAND_INS if not s.pulled for n in s.names}
    assert "registry.k8s.io/e2e-test-images/busybox:1.29-2" in run
    assert "gcr.io/k8s-staging-cri-tools/test-image-tag:test" in pulled
    assert not any("digest" in n for n in names), "no stand-in can have the upstream digest"


CRI_TOOLS = cache_dir() / "go" / "mod" / "sigs.k8s.io" / f"cri-tools@{pins.CRI_TOOLS_VERSION}"
_NAMED = re.compile(r'(DefaultRegistryE2ETestImagesPrefix|registry) \+ "([^"]+)"')
_LITERAL = re.compile(r'"((?:registry\.k8s\.io|k8s\.gcr\.io|gcr\.io)/[^"]+)"')
PREFIXES = {"DefaultRegistryE2ETestImagesPrefix": criimages.E2E, "registry": criimages.STAGING}


@pytest.mark.skipif(not CRI_TOOLS.is_dir(), reason=f"cri-tools {pins.CRI_TOOLS_VERSION} is not "
                    "in the module cache: run `sandcheck provision --upstream`")
def test_every_linux_image_critest_names_has_a_stand_in():
    """The pinned sources' image names (consts, the web servers, nonewprivs): a pin bump that
    adds one fails here, naming it, instead of failing its specs with a pull error."""
    named = set()
    for path in [*(CRI_TOOLS / "pkg" / "validate").glob("*.go"),
                 CRI_TOOLS / "pkg" / "framework" / "util.go"]:
        text = path.read_text()
        named.update(PREFIXES[prefix] + rest for prefix, rest in _NAMED.findall(text))
        named.update(_LITERAL.findall(text))
    linux = {n for n in named if "win-" not in n and "@sha256:" not in n
             and not n.endswith("-") and not n.endswith("/")}
    stood_in = {n for s in criimages.STAND_INS for n in s.names}
    assert {"registry.k8s.io/pause:3.9", "k8s.gcr.io/pause:3.9"} <= linux
    assert criimages.STAGING + "hostnet-nginx-amd64" in stood_in  # + runtime.GOARCH
    missing = sorted(n for n in linux if n not in stood_in)
    assert not missing, f"critest names images sandcheck has no stand-in for: {missing}"


def test_stand_ins_carry_busybox_as_hard_links_and_what_each_spec_reads(tmp_path):
    try:
        busybox = criimages.busybox()
    except UserError as exc:
        pytest.skip(str(exc))
    probe = tmp_path / "probe"
    probe.write_bytes(b"\x7fELF stand-in")
    by_key = {s.key: s for s in criimages.STAND_INS}
    archive = criimages.build(by_key["nonewprivs"], busybox, probe, tmp_path)
    assert criimages.build(by_key["nonewprivs"], busybox, probe, tmp_path) == archive
    with tarfile.open(archive) as outer:
        index = json.load(outer.extractfile("index.json"))
        names = [m["annotations"]["io.containerd.image.name"] for m in index["manifests"]]
        assert names == ["registry.k8s.io/e2e-test-images/nonewprivs:1.3"]
        manifest = json.load(outer.extractfile(
            "blobs/sha256/" + index["manifests"][0]["digest"].split(":")[1]))
        config = json.load(outer.extractfile(
            "blobs/sha256/" + manifest["config"]["digest"].split(":")[1]))
        layer = outer.extractfile("blobs/sha256/" + manifest["layers"][0]["digest"]
                                  .split(":")[1])
        with tarfile.open(fileobj=layer) as inner:
            members = {m.name: m for m in inner.getmembers()}
            order = [m.name for m in inner.getmembers()]
    assert config["config"]["Cmd"] == ["/usr/local/bin/nnp", "euid"]
    ls = members["bin/ls"]
    assert ls.islnk() and ls.linkname == "bin/busybox"  # a masked /bin/ls masks ls only
    assert order.index("bin/busybox") < order.index("bin/ls")
    assert members["usr/local/bin/nnp"].mode == 0o4755
    for name in ("usr/sbin/nginx", "usr/bin/ipcs", "usr/bin/pgrep", "etc/passwd"):
        assert members[name].isfile(), name
    for lib in criimages.shared_libraries(busybox):  # Debian's busybox links the C library
        assert members[str(lib).lstrip("/")].isfile(), lib


# --- offline: the registry host configuration and the logs ---------------------------------------


def test_every_host_is_routed_to_the_loopback_registry(tmp_path):
    config = tmp_path / "certs.d"
    assert hosts.beyond(hosts.endpoints(config)) == [
        "_default: missing, so unlisted hosts are pulled from themselves"]
    written = hosts.route_all(config, "http://127.0.0.1:5000")
    assert written == config / "_default" / "hosts.toml"
    assert hosts.endpoints(config) == {"_default": ["http://127.0.0.1:5000"]}
    assert hosts.beyond(hosts.endpoints(config)) == []
    (config / "gcr.io").mkdir()
    (config / "gcr.io" / "hosts.toml").write_text(
        'server = "https://gcr.io"\n[host."http://127.0.0.1:5000"]\ncapabilities = ["pull"]\n')
    assert hosts.beyond(hosts.endpoints(config)) == ["gcr.io: https://gcr.io"]


def test_a_kind_nodes_routes_are_read_from_outside_and_its_registry_is_local():
    listing = ("\n==> /etc/containerd/certs.d/_default/hosts.toml <==\n"
               + hosts.route_all_text("http://172.18.0.5:5000")
               + "\n==> /etc/containerd/certs.d/localhost:40123/hosts.toml <==\n"
               'server = "http://localhost:40123"\n\n[host."http://172.18.0.5:5000"]\n'
               '  capabilities = ["pull", "resolve"]\n')
    found = hosts.endpoints_of(kindimages.hosts_files(listing))
    assert found == {"_default": ["http://172.18.0.5:5000"],
                     "localhost:40123": ["http://localhost:40123", "http://172.18.0.5:5000"]}
    assert hosts.beyond(found, frozenset({"172.18.0.5:5000"})) == []
    assert hosts.beyond(found) == ["_default: http://172.18.0.5:5000",
                                   "localhost:40123: http://172.18.0.5:5000"]
    assert hosts.beyond({}) == ["_default: missing, so unlisted hosts are pulled from themselves"]
    assert kindimages.hosts_files("") == {}


def test_pull_attempts_beyond_this_machine_are_found_in_logs():
    log = "\n".join([
        'level=error msg="PullImage \\"gcr.io/a:b\\" failed" error="failed to resolve '
        'reference \\"gcr.io/a:b\\": failed to do request: Head \\"https://gcr.io/v2/a/'
        'manifests/b\\": dial tcp: lookup gcr.io on 10.0.0.2:53: no such host"',
        'level=info msg="fetch blob" url="http://127.0.0.1:5000/v2/pause/blobs/sha256:1"',
        "fetch failed: dial tcp 192.0.2.1:443: connection refused",
        "INFO: the IP:port is http://10.233.4.5:80",  # a pod's web server, not a pull
        "failed to connect to localhost:80 inside namespace: dial tcp4 127.0.0.1:80",
    ])
    found = remote_attempts(log)
    assert [f.split(":", 1)[0] for f in found] == ["gcr.io", "192.0.2.1"]
    kind_pull = ('msg="fetch blob" url="http://172.18.0.5:5000/v2/e2e-test-images/agnhost/'
                 'blobs/sha256:1"')
    assert remote_attempts(kind_pull, frozenset({"172.18.0.5:5000"})) == []
    assert remote_attempts(kind_pull) == [f"172.18.0.5:5000: {kind_pull}"]


# --- what critest leaves on the host ------------------------------------------------------------


def test_only_new_unattached_segments_of_exited_makers_are_leaked(tmp_path, monkeypatch):
    table = tmp_path / "shm"
    head = "key shmid perms size cpid lpid nattch uid gid cuid cgid atime dtime ctime rss swap\n"
    table.write_text(head + "1 0 644 1048576 101 0 0 0 0 0 0 0 0 0 0 0\n")
    before = sysvipc.segments(table)
    table.write_text(head + "1 0 644 1048576 101 0 0 0 0 0 0 0 0 0 0 0\n"
                     "2 5 644 1048576 102 0 0 0 0 0 0 0 0 0 0 0\n"
                     "3 6 644 1048576 103 0 1 0 0 0 0 0 0 0 0 0\n"
                     "4 7 644 4096 104 0 0 0 0 0 0 0 0 0 0 0\n")
    monkeypatch.setattr(sysvipc, "alive", lambda pid: pid == 104)
    leaked = sysvipc.leaked_since(before, sysvipc.segments(table))
    assert [s.shmid for s in leaked] == [5]


# --- critest itself, on the node backend --------------------------------------------------------

FOCUS = (r"public image with tag should|runtime should support execSync \[|"
         r"port mapping with host port and container port")
"""A pull from the registry by design, an exec, and a host port (portmap)."""


def _critest_unavailable() -> str | None:
    from sandcheck.provision.tools import CRITEST, REGISTRY

    for tool in (CRITEST, REGISTRY):
        if not all(path.is_file() for path in tool.binaries().values()):
            return f"{tool.name} is not built: run `sandcheck provision --upstream`"
    return None


def _nat_rules() -> list[str]:
    import subprocess

    proc = subprocess.run(["iptables", "-w", "-t", "nat", "-S"], capture_output=True,
                          text=True, timeout=60)
    return proc.stdout.splitlines() if proc.returncode == 0 else []


@pytest.mark.integration
def test_critest_runs_offline_on_the_node_backend_and_each_spec_is_a_check(run_suite):
    from helpers import skip_unless_node_backend

    skip_unless_node_backend()
    why = _critest_unavailable()
    if why:
        pytest.skip(why)
    nat_before = _nat_rules()
    proc, checks = run_suite("suites/upstream", "--backend", "node", "--runtimes", "runc",
                             "--critest-focus", FOCUS)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    critest = checks[("upstream.critest", "runc")]
    assert critest["status"] == "passed"
    specs = {cid: c for (cid, rt), c in checks.items() if cid.startswith("critest.")}
    assert {c["status"] for c in specs.values()} == {"passed"}
    assert any("public-image-with-tag" in cid for cid in specs)  # pulled from the registry
    assert any("port-mapping-with-host-port" in cid for cid in specs)
    assert len(specs) == 3, sorted(specs)  # and no offline skip the focus left out

    evidence = {e["what"]: e for e in critest["evidence"]}
    attempts = evidence["pull attempts beyond this machine (containerd's and critest's logs)"]
    assert attempts["output"] == [], attempts
    routed = evidence["registry host configuration of the nodes' containerd"]
    assert routed["beyond_this_machine"] == [] and list(routed["output"]) == ["node"]
    assert list(routed["output"]["node"]) == ["_default"]
    assert all(url.startswith("http://127.0.0.1:") for url in routed["output"]["node"]["_default"])
    served = evidence["critest"]["images"]["served by the registry"]
    assert served["gcr.io/k8s-staging-cri-tools/test-image-tag:test"].startswith("127.0.0.1:")

    report = Path(critest["evidence"][0]["junit"])
    assert report.is_file() and read_junit(report)
    results = json.loads((report.parent.parent.parent / "results.json").read_text())
    (metric,) = [m for m in results["metrics"] if m["name"] == "upstream_critest_seconds"]
    assert metric["runtime"] == "runc" and metric["samples"][0] > 0
    assert _nat_rules() == nat_before, "portmap's chains outlived the run"


# --- Kubernetes' e2e ----------------------------------------------------------------------------


def test_a_test_binary_build_module_keeps_what_the_tests_import(tmp_path):
    """go mod tidy keeps a dependency's package's imports, not its tests': e2e.test's
    specs are all imported by e2e_test.go."""
    pkg = tmp_path / "test" / "e2e"
    pkg.mkdir(parents=True)
    (pkg / "e2e.go").write_text('package e2e\nimport "example.com/not/a/test/import"\n')
    (pkg / "e2e_test.go").write_text(
        'package e2e\n\nimport (\n\t"flag"\n\t"testing"\n\n\t// a comment\n'
        '\t"github.com/onsi/ginkgo/v2"\n\tyaml "go.yaml.in/yaml/v2"\n'
        '\t_ "k8s.io/kubernetes/test/e2e/apps"\n)\n\nfunc TestE2E(t *testing.T) {}\n')
    (pkg / "other_test.go").write_text('package e2e\nimport "k8s.io/kubernetes/test/e2e/node"\n')
    module = Module(tmp_path, "module k8s.io/kubernetes\n", None)
    assert imports_of_tests(module, "k8s.io/kubernetes", ["k8s.io/kubernetes/test/e2e"]) == [
        "github.com/onsi/ginkgo/v2", "go.yaml.in/yaml/v2", "k8s.io/kubernetes/test/e2e/apps",
        "k8s.io/kubernetes/test/e2e/node"]


def test_e2e_focus_presets_and_a_bad_one():
    assert e2e.resolve_focus(None) == e2e.FOCUS_PRESETS[e2e.RUNTIMECLASS]
    assert e2e.resolve_focus("Pods should") == e2e.Focus("Pods should")
    node = e2e.resolve_focus(e2e.NODE)
    assert re.search(node.regex, "[sig-node] Pods should be submitted and removed "
                     "[NodeConformance] [Conformance]")
    assert not re.search(node.regex, "[sig-network] DNS should provide DNS [Conformance]")
    assert "NodeConformance" in node.label_filter and "!Slow" in node.label_filter
    with pytest.raises(UserError, match="no such preset"):
        e2e.resolve_focus("preset:everything")


def test_what_a_run_cannot_offer_comes_from_the_backend_the_images_and_the_host(tmp_path):
    assert e2e.limits("kubeconfig") == {}
    local = e2e.limits("local")
    assert local and all(why for why in local.values())
    assert set(e2e.STAND_IN_LIMITS) <= set(e2e.limits("local", stand_in_images=True))
    no_module = tmp_path / "sys-module"
    no_module.mkdir()
    assert not e2e.has_dummy_links(no_module, tmp_path / "lib-modules")
    (no_module / "dummy").mkdir()
    assert e2e.has_dummy_links(no_module, tmp_path / "lib-modules")
    release = tmp_path / "lib-modules" / os.uname().release
    release.mkdir(parents=True)
    (release / "modules.builtin").write_text("kernel/drivers/net/dummy.ko\n")
    assert e2e.has_dummy_links(tmp_path / "none", tmp_path / "lib-modules")
    here = e2e.limits("local", node_is_host=True)
    assert (e2e.DUMMY_LINK_SPEC in here) == (not e2e.has_dummy_links())


def test_e2e_runs_against_the_kubeconfig_and_leaves_out_what_the_backend_cannot_offer():
    limits = e2e.limits("local")
    argv = e2e.e2e_argv(Path("/b/e2e.test"), Path("/w/admin.kubeconfig"), Path("/r/junit.xml"),
                        e2e.Focus("RuntimeClass"), list(limits))
    assert argv[0] == "/b/e2e.test"
    assert "--kubeconfig=/w/admin.kubeconfig" in argv and "--provider=skeleton" in argv
    assert "--ginkgo.focus=RuntimeClass" in argv and "--ginkgo.junit-report=/r/junit.xml" in argv
    skip = next(a for a in argv if a.startswith("--ginkgo.skip=")).split("=", 1)[1]
    assert re.search(skip, "[sig-node] RuntimeClass should run a Pod requesting a RuntimeClass "
                     "with a configured handler [Feature:RuntimeHandler]")


def test_a_parallel_focus_runs_e2e_through_the_ginkgo_cli():
    node = e2e.resolve_focus(e2e.NODE)
    argv = e2e.e2e_argv(Path("/b/e2e.test"), Path("/w/k"), Path("/r/junit.xml"), node, ["x"],
                        ginkgo=Path("/b/ginkgo"))
    cli, test = argv[:argv.index("/b/e2e.test")], argv[argv.index("/b/e2e.test") + 1:]
    assert cli[0] == "/b/ginkgo" and f"--procs={node.procs}" in cli and node.procs > 1
    assert {"--output-dir=/r", "--junit-report=junit.xml", "--skip=x",
            f"--label-filter={node.label_filter}"} <= set(cli)
    assert test[0] == "--" and "--kubeconfig=/w/k" in test
    assert not any(a.startswith("--ginkgo.") for a in argv)


def test_a_limit_is_reported_skipped_only_where_the_focus_would_have_run_it(tmp_path):
    junit = tmp_path / "junit.xml"
    handler = ("[sig-node] RuntimeClass should run a Pod requesting a RuntimeClass with a "
               "configured handler [Feature:RuntimeHandler]")
    private = ("[sig-node] Container Runtime should be able to pull from private registry with "
               "secret [NodeConformance]")
    api = "[sig-node] RuntimeClass should support RuntimeClasses API operations"
    junit.write_text(f"""<testsuites><testsuite>
      <testcase name="[It] {handler}" status="skipped"><skipped message="skipped"/></testcase>
      <testcase name="[It] {private}" status="skipped"><skipped message="skipped"/></testcase>
      <testcase name="[It] {api}" status="passed"/></testsuite></testsuites>""")
    specs = read_junit(junit)
    focus = e2e.resolve_focus(e2e.RUNTIMECLASS).regex
    verdicts = judge_all(specs, {}, e2e.SUITE, e2e.limits("local"), focus,
                         skipped_as="not run on the local backend")
    assert [(v.status, v.message.split(":")[0]) for v in verdicts] == [
        ("skipped", "not run on the local backend"), ("passed", "")]


E2E_BINARY = e2e.E2E.binaries()["e2e.test"]


@pytest.mark.skipif(not E2E_BINARY.is_file(), reason="e2e.test is not built: run `sandcheck "
                    "provision --upstream`")
def test_every_e2e_stand_in_is_an_image_the_pinned_e2e_names():
    """e2e.test --list-images at the pin: a Kubernetes bump that moves a tag fails here,
    naming it, instead of failing its specs with a pull error."""
    listed = subprocess.run([str(E2E_BINARY), "--list-images"], capture_output=True, text=True,
                            timeout=TIMEOUTS.command, check=True).stdout.split()
    stood_in = [n for s in e2eimages.STAND_INS for n in s.names]
    assert [n for n in stood_in if n not in listed] == []
    for used_by_runtimeclass_specs in ("busybox", "agnhost", "pause"):
        assert any(f"/{used_by_runtimeclass_specs}:" in n for n in stood_in)


def test_the_agnhost_stand_in_runs_agnhost_with_its_image_accounts(tmp_path):
    busybox = Path("/bin/busybox")
    if not busybox.is_file():
        pytest.skip("/bin/busybox is missing: apt-get install busybox-static")
    agnhost = tmp_path / "agnhost"
    agnhost.write_bytes(b"#!/bin/sh\n")
    (tmp_path / "localhost.crt").write_text("cert")
    (stand_in,) = [s for s in e2eimages.STAND_INS if s.agnhost]
    archive = criimages.build(stand_in, busybox, busybox, tmp_path / "cache",
                              {"agnhost": agnhost, "localhost.crt": tmp_path / "localhost.crt"})
    with tarfile.open(archive) as outer:
        index = json.load(outer.extractfile("index.json"))
        manifest = json.load(outer.extractfile(
            "blobs/sha256/" + index["manifests"][0]["digest"].split(":")[1]))
        config = json.load(outer.extractfile(
            "blobs/sha256/" + manifest["config"]["digest"].split(":")[1]))
        layer = outer.extractfile("blobs/sha256/" + manifest["layers"][0]["digest"].split(":")[1])
        with tarfile.open(fileobj=layer) as inner:
            names = inner.getnames()
            passwd = inner.extractfile("etc/passwd").read().decode()
    assert config["config"]["Entrypoint"] == ["/agnhost"] and config["config"]["Cmd"] == ["pause"]
    assert {"agnhost", "agnhost-2", "localhost.crt", "bin/sh", "uploads"} <= set(names)
    assert "user-defined-in-image:x:1000:" in passwd
    with pytest.raises(UserError, match="provision --upstream"):
        criimages.build(stand_in, busybox, busybox, tmp_path / "cache2", None)


KIND_E2E = pytest.param("kind", marks=pytest.mark.full)  # a cluster of its own: ~2 min


@pytest.mark.parametrize("backend", ["local", KIND_E2E])
def test_e2e_runs_offline_and_each_spec_is_a_check(run_suite, backend):
    """A RuntimeClass spec and the image pulls of node conformance (one pulled from the run's
    registry, one from a registry that does not exist, which must fail there and not go out),
    on a node of this host (local) and on the nodes of a kind cluster (served by a registry
    container on its network)."""
    from helpers import skip_unless_node_backend

    skip_unless_node_backend()
    if backend == "kind" and registry.entry("kind").unavailable():
        pytest.skip(f"kind: {registry.entry('kind').unavailable()}")
    if not E2E_BINARY.is_file():
        pytest.skip("e2e.test is not built: run `sandcheck provision --upstream`")
    focus = (r"RuntimeClass should reject a Pod requesting a non-existent|RuntimeClass with a "
             r"configured handler|with a new image should (be able to pull image|not be able "
             r"to pull image from invalid registry)")
    proc, checks = run_suite("suites/upstream/test_e2e.py", "--backend", backend, "--runtimes",
                             "runc", "--e2e-focus", focus)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    check = checks[("upstream.e2e", None)]
    specs = {cid: c for (cid, rt), c in checks.items() if cid.startswith("e2e.")}
    statuses = sorted((cid.split("-should-", 1)[1][:24], c["status"])
                      for cid, c in specs.items())
    # local: test-handler is found by reading the host's containerd config, not the node's
    handler_spec = "skipped" if backend == "local" else "passed"
    assert statuses == [("be-able-to-pull-image-no", "passed"),
                        ("not-be-able-to-pull-imag", "passed"),
                        ("reject-a-pod-requesting-", "passed"),
                        ("run-a-pod-requesting-a-r", handler_spec)], statuses
    assert all(c["runtime"] == "runc" for c in specs.values())  # the nodes' default handler
    evidence = {e["what"]: e for e in check["evidence"]}
    attempts = evidence["pull attempts beyond this machine (containerd's and e2e's logs)"]
    assert attempts["output"] == [], attempts
    scanned = attempts["lines_scanned"]  # every node's containerd log was read, and e2e's
    assert len(scanned) == (2 if backend == "local" else 3) and all(scanned.values()), scanned
    routed = evidence["registry host configuration of the nodes' containerd"]
    assert routed["beyond_this_machine"] == [] and routed["output"], routed
    images = evidence["e2e"]["images"]
    assert "registry.k8s.io/e2e-test-images/agnhost:2.56" in images["imported"]
    assert images["served by the registry"][
        "registry.k8s.io/e2e-test-images/agnhost:2.56"].startswith("127.0.0.1:")
    # local: the node is this host; kind: the registry container on the kind network
    on_loopback = images["registry (as the nodes reach it)"].startswith("http://127.0.0.1:")
    assert on_loopback == (backend == "local"), images


def test_the_report_sets_each_upstream_suite_beside_the_runtimes_own_checks():
    from sandcheck.reports.results import Check, Metric, Results
    from sandcheck.reports.upstream import upstream_markdown, upstream_rows

    results = Results(checks=[
        Check("critest.a", "runsc", "passed", duration_seconds=1.0),
        Check("critest.b", "runsc", "deviation", duration_seconds=2.0),
        Check("upstream.critest", "runsc", "passed", duration_seconds=300.0),
        Check("isolation.kernel", "runsc", "passed", duration_seconds=4.0),
        Check("isolation.dmesg", "runsc", "passed", duration_seconds=5.0),
        Check("e2e.c", "runc", "passed"), Check("isolation.kernel", "runc", "passed"),
    ], metrics=[Metric("upstream_critest_seconds", "runsc", "s", [340.0]),
                Metric("start_seconds", "runsc", "s", [0.4])])
    rows = {(r.suite, r.runtime): r for r in upstream_rows(results)}
    runsc = rows[("critest", "runsc")]
    assert (runsc.counts["passed"], runsc.counts["deviation"], runsc.seconds) == (1, 1, 340.0)
    assert (runsc.own_checks, runsc.own_seconds) == (2, 9.0)
    assert rows[("e2e", "runc")].seconds is None
    assert "| critest | runsc | 1 | 0 | 1 | 0 | 340 s | 9 s (2 checks) |" in upstream_markdown(
        results)
    assert upstream_markdown(Results()) == []


def test_a_declaration_may_leave_out_ginkgos_label_list():
    from sandcheck.upstream.junit import Spec

    name = ("[sig-node] Sysctls [LinuxOnly] [NodeConformance] should support sysctls "
            "[MinimumKubeletVersion:1.21] [Environment:NotInUserNS] [Conformance]")
    spec = Spec(f"{name} [sig-node, NodeConformance, Environment:NotInUserNS, Conformance]",
                "failed", "sysctl not applied")
    assert judge(spec, {name: "src"}, "e2e").status == "deviation"
    assert judge(spec, {spec.name: "src"}, "e2e").status == "deviation"
    other = Spec(name.replace("sysctls [Min", "sysctls with slashes [Min"), "failed", "x")
    assert judge(other, {name: "src"}, "e2e").status == "failed"
    declared = BUILTIN["runsc"].upstream_deviations["e2e"]
    assert judge(spec, declared, "e2e").status == "deviation"
