"""The journal of finished checks and ``--resume``: what a killed run keeps, and a later run
carrying it over.

Pure tests of the journal (a line cut short by a kill is ignored, the lock) and of the
resume decisions (identity, node slots, pending cells, carried results); then pytest runs
of a tiny check file against a stand-in backend, killed with SIGKILL and SIGINT half-way
and resumed; the last test kills a certify run on the local backend and resumes it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import pytest

from sandcheck.cli import certify
from sandcheck.errors import UserError
from sandcheck.fixtures import resume
from sandcheck.reports import journal as jn
from sandcheck.reports.bundle import MANIFEST, verify_bundle
from sandcheck.reports.junit import add_testcases, names_of
from sandcheck.reports.results import Check, Metric, Results

ROOT = Path(__file__).resolve().parent.parent
IDENTITY = {"selection_version": "2", "backend": "kubeconfig", "runtimes": ["runc"],
            "nodes": "all"}


def check(n: int, status: str = "passed", node: str | None = "w1") -> Check:
    return Check(id=f"isolation.c{n}", runtime="runc", status=status, node=node,
                 nodeid=f"suites/isolation/test_x.py::test_c{n}[runc-node0]",
                 duration_seconds=0.5)


def write_journal(path: Path, checks: list[Check]) -> jn.JournalWriter:
    writer = jn.JournalWriter(path, IDENTITY)
    writer.environment({"backend": "kubeconfig", "node_fingerprints": {"w1": {"k": 1}}})
    for c in checks:
        writer.check(c, c.nodeid, slot=0, slot_node="w1")
    return writer


# -- the journal --------------------------------------------------------------------------------

def test_a_journal_reads_back_what_was_written(tmp_path):
    path = tmp_path / jn.JOURNAL
    writer = write_journal(path, [check(1), check(2, "failed")])
    writer.metric(Metric(name="m_seconds", runtime="runc", unit="s", samples=[1.0]))
    writer.check(check(1, "error"), check(1).nodeid, slot=0, slot_node="w1")  # a later line wins
    writer.close()
    state = jn.read_journal(path)
    assert state.identity == IDENTITY and state.cut == []
    assert [(c.id, c.status) for c in state.checks.values()] == [
        ("isolation.c2", "failed"), ("isolation.c1", "error")]
    assert state.environment["node_fingerprints"] == {"w1": {"k": 1}}
    assert state.metrics[0].samples == [1.0]
    assert state.slot_names() == {0: "w1"}
    assert path.read_bytes().count(b"\n") == 6  # one line per record, no more


def test_the_fleets_nodes_name_every_slot_an_item_ran_on(tmp_path):
    path = tmp_path / jn.JOURNAL
    writer = jn.JournalWriter(path, IDENTITY)
    # written before the fleet was up: the slot's name was not known yet
    writer.check(check(1), "t.py::a[runc-node0]", slot=0, slot_node=None)
    writer.fleet_nodes(["a", "b"])
    writer.check(check(2), "t.py::a[runc-node1]", slot=1, slot_node="b")
    writer.check(check(3), "t.py::a[runc-node2]", slot=2, slot_node=None)  # beyond: unused
    writer.close()
    assert jn.read_journal(path).slot_names() == {0: "a", 1: "b", 2: None}


def test_a_line_cut_short_by_a_kill_is_ignored_and_a_resumed_writer_drops_it(tmp_path):
    path = tmp_path / jn.JOURNAL
    write_journal(path, [check(1), check(2)]).close()
    whole = path.read_bytes()
    with open(path, "ab") as f:  # what SIGKILL in the middle of a write leaves
        f.write(b'{"check":{"id":"isolation.c3","runtime":"ru')
    state = jn.read_journal(path)
    assert [c.id for c in state.checks.values()] == ["isolation.c1", "isolation.c2"]
    assert state.cut == [str(path)]
    writer = jn.JournalWriter(path, IDENTITY, resume=True)
    writer.check(check(3), check(3).nodeid)
    writer.close()
    assert path.read_bytes().startswith(whole)  # nothing before the cut changed
    state = jn.read_journal(path)
    assert [c.id for c in state.checks.values()] == ["isolation.c1", "isolation.c2",
                                                     "isolation.c3"]
    assert state.cut == [] and len(state.sessions) == 2  # the resumed process' line


def test_a_damaged_line_inside_the_journal_is_an_error(tmp_path):
    path = tmp_path / jn.JOURNAL
    write_journal(path, [check(1), check(2)]).close()
    lines = path.read_bytes().split(b"\n")
    lines[2] = lines[2][:10]
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(jn.JournalError, match="line 3 is not JSON"):
        jn.read_journal(path)
    path.write_bytes(b'{"journal": 99}\n')
    with pytest.raises(jn.JournalError, match="format 99"):
        jn.read_journal(path)


def test_one_writer_at_a_time_and_the_lock_dies_with_its_process(tmp_path):
    path = tmp_path / jn.JOURNAL
    writer = write_journal(path, [check(1)])
    with pytest.raises(jn.JournalError, match=f"pid {os.getpid()}"):
        jn.JournalWriter(path, IDENTITY, resume=True)
    assert f"pid {os.getpid()}" in jn.busy(path)
    writer.close()
    assert jn.busy(path) is None
    # another process holds it until SIGKILL, which drops it with the process
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom sandcheck.reports import journal as j\n"
         f"w = j.JournalWriter(j.Path({str(path)!r}), {{}}, resume=True)\n"
         "print('locked', flush=True)\ntime.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert jn.busy(path) is not None
    finally:
        holder.kill()
        holder.wait()
    assert jn.busy(path) is None


def test_fsync_at_most_once_per_interval(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(jn.os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    writer = write_journal(tmp_path / jn.JOURNAL, [])
    synced.clear()
    for n in range(50):
        writer.check(check(n), check(n).nodeid)
        writer.tick()
    assert len(synced) <= 1  # 50 lines in well under TIMEOUTS.journal_sync
    writer.last_sync -= 3600
    writer.tick()
    assert synced and writer.unsynced == 0
    writer.close()


# -- resume decisions ---------------------------------------------------------------------------

def test_identity_difference_names_the_option():
    assert resume.identity_difference(IDENTITY, dict(IDENTITY)) is None
    why = resume.identity_difference(IDENTITY, {**IDENTITY, "runtimes": ["runc", "runsc"]})
    assert why.startswith("the interrupted run had --runtimes runc, this one has runc,runsc")
    why = resume.identity_difference(IDENTITY, {**IDENTITY, "nodes": "pool=a"})
    assert "--nodes 'all', this one has 'pool=a'" in why
    assert "selection version '2'" in resume.identity_difference(
        IDENTITY, {**IDENTITY, "selection_version": "3"})


def carried_state(slots: dict[int, str | None], pending: set[tuple[int, str]]
                  ) -> resume.RunJournal:
    carried = jn.JournalState(identity=IDENTITY)
    for index, name in slots.items():
        nodeid = f"t.py::test_a[runc-node{index}]"
        carried.items[nodeid] = jn.Finished(nodeid, index, name)
    return resume.RunJournal(Path("."), IDENTITY, None, carried=carried, pending=pending)


def test_pending_cells_name_the_nodes_of_unfinished_slots():
    state = carried_state({0: "a", 1: "b"}, {(1, "runsc"), (2, "runc"), (2, "runsc"),
                                             (5, "runc")})
    config = SimpleNamespace(stash={resume._KEY: state})
    assert resume.pending_cells(config, ["a", "b", "c"]) == {
        ("b", "runsc"), ("c", "runc"), ("c", "runsc")}  # slot 5 is beyond the selection
    assert resume.pending_cells(SimpleNamespace(stash={}), ["a"]) is None  # not resuming
    with pytest.raises(UserError, match="the backend is not up yet"):
        resume.pending_cells(config, selector="all")
    listed = []

    def list_node(label_selector=None, **_):
        listed.append(label_selector)
        return SimpleNamespace(items=[SimpleNamespace(metadata=SimpleNamespace(name=n))
                                      for n in ("c", "a", "b")])

    state.backend = SimpleNamespace(core=SimpleNamespace(list_node=list_node))
    assert resume.pending_cells(config, selector="pool=x") == {
        ("b", "runsc"), ("c", "runc"), ("c", "runsc")}
    assert listed == ["pool=x"]  # the fleet's selector, one node list
    not_resuming = resume.RunJournal(Path("."), IDENTITY, None)
    assert resume.pending_cells(SimpleNamespace(stash={resume._KEY: not_resuming})) is None


def test_a_slot_that_names_another_node_now_is_refused():
    state = carried_state({0: "a", 1: "b", 2: None}, set())
    resume.check_slots(state, ["a", "b"])  # slot 2 was unused and still is
    with pytest.raises(UserError, match="node slot 1 was b in the interrupted run and is c"):
        resume.check_slots(state, ["a", "c"])  # b gone: every later slot moved
    with pytest.raises(UserError, match=r"slot 2 was unused .* is c now"):
        resume.check_slots(state, ["a", "b", "c"])
    with pytest.raises(UserError, match=r"slot 0 was a .* is b now \(and 1 more\)"):
        resume.check_slots(state, ["b", "c"])


def test_carried_results_go_back_in_collection_order_with_the_environment_joined():
    carried = jn.JournalState(identity=IDENTITY)
    for c in (check(1), check(3)):
        carried.checks[c.nodeid] = c
    spec = Check(id="critest.x", runtime="runc", status="deviation",
                 nodeid=f"{check(3).nodeid}::critest.x")
    carried.checks[spec.nodeid] = spec
    carried.environment = {"node_fingerprints": {"w1": {"k": 1}}, "kubernetes": "v1.33",
                           "fleet_cells": {"w1/runc": "running"}}
    results = Results(environment={"node_fingerprints": {"w2": {"k": 2}},
                                   "kubernetes": "v1.34"}, checks=[check(2), check(4)])
    order = {check(n).nodeid: n for n in range(1, 5)}
    resume.carry_into(results, carried, order)
    assert [c.id for c in results.checks] == ["isolation.c1", "isolation.c2", "isolation.c3",
                                              "critest.x", "isolation.c4"]
    env = results.environment
    assert env["node_fingerprints"] == {"w1": {"k": 1}, "w2": {"k": 2}}
    assert env["kubernetes"] == "v1.34" and env["fleet_cells"] == {"w1/runc": "running"}
    assert env["resumed"]["carried_checks"] == 3


def test_junit_testcases_of_carried_checks(tmp_path):
    assert names_of("suites/isolation/test_x.py::test_c1[runc-node0]") == (
        "suites.isolation.test_x", "test_c1[runc-node0]")
    assert names_of("suites/a/test_b.py::TestK::test_m") == ("suites.a.test_b.TestK", "test_m")
    path = tmp_path / "junit.xml"
    path.write_text('<?xml version="1.0"?><testsuites name="pytest tests"><testsuite '
                    'name="pytest" errors="0" failures="1" skipped="0" tests="1" time="2.0">'
                    '<testcase classname="a" name="new" time="2.0"><failure message="x">tb'
                    '</failure></testcase></testsuite></testsuites>')
    add_testcases(path, [check(1), check(2, "failed"), check(3, "skipped")], "carried")
    suite = ET.parse(path).getroot().find("testsuite")
    assert {k: suite.get(k) for k in ("tests", "failures", "skipped", "errors", "time")} == {
        "tests": "4", "failures": "2", "skipped": "1", "errors": "0", "time": "3.500"}
    names = [t.get("name") for t in suite.findall("testcase")]
    assert names == ["test_c1[runc-node0]", "test_c2[runc-node0]", "test_c3[runc-node0]", "new"]
    assert suite.findall("testcase")[0].find("system-out").text == "carried"
    missing = tmp_path / "none.xml"  # pytest wrote none: one is made
    add_testcases(missing, [check(1)], "carried")
    assert ET.parse(missing).getroot().find("testsuite").get("tests") == "1"


# -- certify --resume: what it refuses before running anything ----------------------------------

def test_certify_passes_the_selection_version_and_resume_to_pytest():
    args, extra = certify.certify_parser().parse_known_args(
        ["--resume", "b", "--backend", "kind"])
    args.bundle = args.resume
    argv = certify.pytest_args(args, extra, Path("/s"), resume=True)
    assert argv[argv.index("--selection-version") + 1] == certify.CERTIFY_VERSION
    assert "--resume" in argv and argv[-2:] == ["--backend", "kind"]
    assert "--resume" not in certify.pytest_args(args, extra, Path("/s"))


def test_certify_resume_refusals(tmp_path, capsys):
    assert "is not a directory" in certify.resume_refusal(tmp_path / "nope")
    assert "holds no journal" in certify.resume_refusal(tmp_path)
    (tmp_path / MANIFEST).write_text("")
    assert "is complete" in certify.resume_refusal(tmp_path)
    (tmp_path / MANIFEST).unlink()
    (tmp_path / "results.json").write_text("{}")
    assert certify.resume_refusal(tmp_path) is None  # ended, bundle unfinished: finish it
    writer = write_journal(tmp_path / jn.JOURNAL, [check(1)])
    assert "is still being written" in certify.resume_refusal(tmp_path)
    writer.close()
    assert certify.resume_refusal(tmp_path) is None
    other = tmp_path / "other"
    jn.JournalWriter(other / jn.JOURNAL, {**IDENTITY, "selection_version": "1"}).close()
    assert "selection version 1; this sandcheck certifies version" in \
        certify.resume_refusal(other)
    assert certify.certify(["--resume", str(other)]) == 2
    assert "--resume: " in capsys.readouterr().err
    assert certify.certify(["--resume", str(other), "--bundle", str(other)]) == 2
    assert "drop --bundle" in capsys.readouterr().err


# -- pytest runs killed half-way and resumed (a stand-in backend, no cluster) -----------------

CHECKS = '''
import os, time
import pytest

@pytest.fixture(scope="session")
def backend():
    return "stand-in"

@pytest.mark.parametrize("n", range(6))
def test_step(backend, runtime, n, evidence):
    evidence.add("step", n)
    if n == int(os.environ.get("HANG_AT", "-1")):
        open(os.environ["HANGING"], "w").close()
        time.sleep(120)
    assert n != 4, "step 4 fails, as it did before"

def test_not_a_check():
    pass
'''


def _stand_in(tmp_path):
    report = tmp_path / "report"

    def run(*args: str, hang_at: int | None = None, stop: int = signal.SIGKILL,
            write: bool = True):
        if write:
            (tmp_path / "test_steps.py").write_text(CHECKS)
        hanging = tmp_path / "hanging"
        hanging.unlink(missing_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
        env.update(PYTHONPATH=str(ROOT), HANGING=str(hanging),
                   HANG_AT=str(-1 if hang_at is None else hang_at))
        if not any(a == "--backend" for a in args):
            args = ("--backend", "node", *args)
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytest", "test_steps.py",
             "--runtimes", "runc", "--report-dir", str(report),
             f"--junitxml={report / 'junit.xml'}", "-p", "no:cacheprovider", "-q", *args],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if hang_at is not None:
            for _ in range(600):
                if hanging.exists() or proc.poll() is not None:
                    break
                time.sleep(0.1)
            proc.send_signal(stop)
        out, _ = proc.communicate(timeout=120)
        return proc.returncode, out, report

    return run


@pytest.fixture
def stand_in(tmp_path):
    """run(*args, hang_at=None, stop=signal) -> (proc, report dir): the check file above as
    a pytest process; with hang_at it is sent ``stop`` once step ``hang_at`` runs."""
    return _stand_in(tmp_path)


def results_of(report: Path) -> list[tuple[str, str]]:
    data = json.loads((report / "results.json").read_text())
    return [(c["nodeid"].split("::")[1], c["status"]) for c in data["checks"]]


EXPECTED = [(f"test_step[runc-{n}]", "failed" if n == 4 else "passed") for n in range(6)]


def test_a_killed_run_keeps_its_finished_checks_and_a_resumed_one_does_the_rest(stand_in):
    code, out, report = stand_in(hang_at=3)
    assert code == -signal.SIGKILL
    assert not (report / "results.json").exists()
    state = jn.read_journal(report / jn.JOURNAL)
    assert [c.nodeid.split("::")[1] for c in state.checks.values()] == [
        "test_step[runc-0]", "test_step[runc-1]", "test_step[runc-2]"]
    assert state.identity["runtimes"] == ["runc"] and state.identity["backend"] == "node"
    assert list(state.checks.values())[0].evidence == [{"what": "step", "output": 0}]

    code, out, report = stand_in("--resume")
    assert code == 1, out  # step 4 fails
    assert "3 deselected" in out and "resuming: 3 finished item(s) carried over" in out
    assert results_of(report) == EXPECTED  # as if it had never stopped
    assert jn.journal_paths(report) == []  # ended: the journal goes
    env = json.loads((report / "results.json").read_text())["environment"]
    assert env["resumed"]["carried_checks"] == 3
    cases = ET.parse(report / "junit.xml").getroot().find("testsuite").findall("testcase")
    names = sorted(c.get("name") for c in cases)
    assert names == sorted(["test_not_a_check", *(n for n, _ in EXPECTED)])
    carried = [c.get("name") for c in cases if c.find("system-out") is not None
               and "carried over" in c.find("system-out").text]
    assert sorted(carried) == ["test_step[runc-0]", "test_step[runc-1]", "test_step[runc-2]"]

    code, out, _ = stand_in("--resume")  # a run that ended is not resumed
    assert code == pytest.ExitCode.USAGE_ERROR and "ended" in out


def test_an_interrupted_run_resumes_and_a_changed_selection_is_refused(stand_in):
    code, out, report = stand_in(hang_at=2, stop=signal.SIGINT)
    assert code == pytest.ExitCode.INTERRUPTED
    assert [n for n, _ in results_of(report)] == ["test_step[runc-0]", "test_step[runc-1]"]
    assert (report / jn.JOURNAL).is_file()  # partial results.json, journal kept
    code, out, _ = stand_in("--resume", "-k", "step")
    assert code == pytest.ExitCode.USAGE_ERROR
    assert "--resume: the interrupted run had test selection" in out
    code, out, _ = stand_in("--resume", "--runtimes", "runc,crun")
    assert "had --runtimes runc, this one has crun,runc" in out
    code, out, report = stand_in("--resume", hang_at=4)  # killed again, in the resumed run
    assert code == -signal.SIGKILL
    code, out, report = stand_in("--resume")
    assert code == 1 and "4 deselected" in out
    assert results_of(report) == EXPECTED
    assert len(json.loads((report / "results.json").read_text())["environment"]["resumed"]
               ["earlier_sessions"]) == 2


SLOTTED = '''
import os, time
from types import SimpleNamespace
import pytest

@pytest.fixture(scope="session")
def backend():
    return "stand-in"

@pytest.fixture(scope="session")
def node_fleet():
    return SimpleNamespace(nodes=os.environ["FLEET"].split(","))

@pytest.mark.parametrize("n", range(3))
def test_cell(backend, runtime, target_node, node_fleet, n):
    target_node.name = node_fleet.nodes[target_node.index]
    if n == int(os.environ.get("HANG_AT", "-1")):
        open(os.environ["HANGING"], "w").close()
        time.sleep(120)
'''


def test_a_resumed_run_whose_node_slot_moved_is_refused_naming_it(tmp_path, monkeypatch):
    """Slot 0 was node a; resumed against a fleet whose slot 0 is b, the run stops as soon
    as the fleet is known, before any check runs on the wrong node."""
    (tmp_path / "test_steps.py").write_text(SLOTTED)
    monkeypatch.setenv("FLEET", "a")
    run = _stand_in(tmp_path)
    code, out, report = run("--backend", "local", "--nodes", "all", hang_at=1, write=False)
    assert code == -signal.SIGKILL
    assert jn.read_journal(report / jn.JOURNAL).slot_names() == {0: "a"}
    monkeypatch.setenv("FLEET", "b")
    code, out, _ = run("--backend", "local", "--nodes", "all", "--resume", write=False)
    assert code == 2, out
    assert ("--resume: node slot 0 was a in the interrupted run and is b now: the nodes "
            "--nodes selects changed") in out
    assert (report / jn.JOURNAL).is_file()  # still resumable once the nodes are back
    monkeypatch.setenv("FLEET", "a")
    code, out, _ = run("--backend", "local", "--nodes", "all", "--resume", write=False)
    assert code == 0, out
    assert len(json.loads((report / "results.json").read_text())["checks"]) == 3


# -- on this machine: certify on the local backend, killed and resumed -----------------------

@pytest.mark.integration
def test_certify_killed_on_the_local_backend_resumes_into_a_bundle_that_verifies(tmp_path):
    """Only what was not finished runs again; the bundle is that of one run."""
    from sandcheck.clusters import registry

    if os.geteuid() != 0:
        pytest.skip("the local backend needs root")
    why = registry.entry("local").unavailable()
    if why:
        pytest.skip(f"the local backend cannot run here: {why}")
    bundle = tmp_path / "bundle"
    options = ["--backend", "local", "--runtimes", "runc", "-q",
               "-k", "kernel_identity or devices_minimal or admission or default_capabilities"]
    args, extra = certify.certify_parser().parse_known_args(["--bundle", str(bundle), *options])
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")},
           "PYTHONPATH": str(ROOT)}
    log = tmp_path / "first.log"
    with open(log, "w") as out:
        first = subprocess.Popen([sys.executable, "-m", "pytest",
                                  *certify.pytest_args(args, extra, ROOT / "suites")],
                                 cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    journal = bundle / jn.JOURNAL
    try:
        for _ in range(3000):  # the first finished check, then SIGKILL
            if journal.is_file() and b'"check"' in journal.read_bytes() or \
                    first.poll() is not None:
                break
            time.sleep(0.1)
    finally:
        first.kill()
        first.wait()
        text = log.read_text()
        if "(run " in text:
            run_id = text.split("(run ", 1)[1].split(")", 1)[0]
            subprocess.run([sys.executable, "-m", "sandcheck.cli.main", "cleanup", "--run",
                            run_id], env=env, capture_output=True, timeout=300)
    done = jn.read_journal(journal)
    assert len(done.checks) >= 1, text[-3000:]
    assert done.run_ids == [run_id]
    assert certify.resume_refusal(bundle) is None
    args.bundle = bundle
    second = subprocess.run([sys.executable, "-m", "pytest",
                             *certify.pytest_args(args, extra, ROOT / "suites", resume=True)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stdout[-3000:]
    assert f"resuming: {len(done.items)} finished item(s) carried over" in second.stdout
    assert f"earlier run {run_id}: RuntimeClass runc does not list run {run_id}" in \
        second.stdout  # (a local cluster is the run's own: the killed one's went with it)
    assert certify.finish(bundle, second.returncode) == 0
    assert verify_bundle(bundle) == []
    checks = json.loads((bundle / "results.json").read_text())["checks"]
    assert len(checks) == 4 and {c["status"] for c in checks} == {"passed"}
    assert [c.nodeid for c in done.checks.values()] == [c["nodeid"] for c in checks][
        :len(done.checks)]
    cases = ET.parse(bundle / "junit.xml").getroot().find("testsuite").findall("testcase")
    assert len(cases) == 4
    assert certify.resume_refusal(bundle).startswith(f"{bundle} is complete")
