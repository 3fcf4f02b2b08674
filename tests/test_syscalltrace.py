"""Host syscalls counted by the kernel's raw_syscalls tracepoint in a private tracefs
instance (sandcheck/host/syscalltrace.py), on real processes of this machine:

- a workload released after tracing began shows the calls it made, and a busy bystander's
  rare call does not appear;
- threads that existed before tracing are counted only because their tids are added
  (the kernel's pid filter does not cover them), threads started during it by
  ``event-fork``; grandchildren forked during tracing are counted;
- the instance is gone afterwards, also after an exception or Ctrl-C in the block;
- two traces at once each see only their own processes;
- with the node backend: the host syscalls of a runc pod and a runsc pod while a busybox
  workload is exec'd in each.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sandcheck.host import syscalltrace
from sandcheck.host.mounts import mount_table
from sandcheck.host.syscalls import syscall_table
from sandcheck.host.syscalltrace import SyscallTrace
from sandcheck.host.trace.tally import _Tally
from sandcheck.host.trace.tasks import task_ids
from sandcheck.host.trace.tracefs import INSTANCE_PREFIX, TracefsMount, remove_stale_instances

why = syscalltrace.unavailable()
tracing = pytest.mark.skipif(why is not None, reason=why or "")

WORKLOAD = r"""
import mmap, os, socket, sys, threading, time
go_read = int(sys.argv[1])
marker_dir = sys.argv[2]
release_old = threading.Event()

def old_thread():
    release_old.wait()
    os.getpgid(0)

old = threading.Thread(target=old_thread)
old.start()
os.read(go_read, 1)  # tracing has started
release_old.set()
old.join()
new = threading.Thread(target=lambda: os.getsid(0))
new.start()
new.join()
os.mkdir(marker_dir)
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen()
client = socket.socket()
client.connect(server.getsockname())
buf = mmap.mmap(-1, 1 << 16)
buf[0] = 1
read_end, write_end = os.pipe()
child = os.fork()
if child == 0:
    os.close(read_end)
    grandchild = os.fork()
    if grandchild == 0:
        os.getpgrp()
        os._exit(0)
    os.write(write_end, str(grandchild).encode())
    os.waitpid(grandchild, 0)
    os._exit(0)
os.close(write_end)
grandchild = int(os.read(read_end, 32))
os.waitpid(child, 0)
print(f"{child} {grandchild}")
"""
"""Waits on a pipe so tracing starts first. Marker calls: getpgid by a thread that existed
before tracing, getsid by one started during it, getpgrp by the grandchild; the workload
never calls getpriority."""

BYSTANDER = r"""
import os, sys, time
os.getpriority(os.PRIO_PROCESS, 0)
print("ready", flush=True)
while not os.path.exists(sys.argv[1]):
    os.getpriority(os.PRIO_PROCESS, 0)
    time.sleep(0.001)
"""
"""Calls getpriority until its stop file appears: busy on the host all through a trace.
It says "ready" once in its loop, so a trace started after that sees the loop and not
only the interpreter's start (a loaded machine can take seconds to get there)."""

WORKLOAD_CALLS = {"mkdir", "socket", "connect", "bind", "listen", "mmap", "getsid",
                  "getpgid", "getpgrp", "wait4"}


class Workload:
    """The workload process, blocked until ``release()``."""

    def __init__(self, tmp_path: Path, name: str = "w"):
        self.marker = tmp_path / f"{name}-made-this"
        self.go_read, self.go_write = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKLOAD, str(self.go_read), str(self.marker)],
            pass_fds=(self.go_read,), stdout=subprocess.PIPE, text=True)
        os.close(self.go_read)

    def release(self) -> tuple[int, int]:
        """Run it to the end; (child pid, grandchild pid)."""
        os.write(self.go_write, b"x")
        os.close(self.go_write)
        out, _ = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0, out
        assert self.marker.is_dir()
        child, grandchild = (int(x) for x in out.split())
        return child, grandchild

    def wait_threads(self, count: int) -> None:
        """Until the workload's pre-existing thread runs (so it is there to be missed)."""
        from sandcheck.timeouts import wait_until

        wait_until(lambda: True if len(task_ids(self.proc.pid)) >= count
                   else None, 30, "the workload's first thread")


class Bystander:
    def __init__(self, tmp_path: Path):
        self.stop_file = tmp_path / "bystander-stop"
        self.proc = subprocess.Popen([sys.executable, "-c", BYSTANDER, str(self.stop_file)],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline() == "ready\n"

    def stop(self) -> None:
        self.stop_file.touch()
        self.proc.wait(timeout=30)
        self.proc.stdout.close()


def _instances(root: Path | None) -> list[str]:
    if root is None or not (root / "instances").is_dir():
        return []
    return sorted(os.listdir(root / "instances"))


def _tracefs_mounts() -> list[str]:
    return [point for point, fstype, _ in mount_table() if fstype == "tracefs"]


# ---- pure parts --------------------------------------------------------------------------------

def test_syscall_table_comes_from_the_uapi_header():
    names = syscall_table()
    assert (names[0], names[1], names[83], names[435]) == ("read", "write", "mkdir", "clone3")
    assert names[454] == "futex_wake"  # newer than the header: from the kernel's table


def test_lines_are_charged_to_the_comm_of_their_moment():
    """The comm the kernel prints is looked up when the line is read; the fork, exec and
    rename events keep it right at each call, and a lost-events line is counted."""
    tally = _Tally(syscall_table())
    tally.comm[101], tally.tgid[101] = "my-tool", 101  # as seeding from /proc does
    tally.feed("\n".join([
        "           <...>-101     (-------) [000] ..... 1.000001: sys_enter: NR 83 (1, 2)",
        "         my-tool-101     (    101) [000] ..... 1.000002: sched_process_fork: "
        "comm=my-tool pid=101 child_comm=my-tool child_pid=102",
        "         my-tool-102     (    102) [001] ..... 1.000003: task_rename: pid=102 "
        "oldcomm=my-tool newcomm=runc:[2:INIT] oom_score_adj=0",
        "   runc:[2:INIT]-102     (    102) [001] ..... 1.000004: sys_enter: NR 39 (0)",
        "             sh-102     (    102) [001] ..... 1.000005: sched_process_exec: "
        "filename=/bin/busybox pid=102 old_pid=102",
        "             sh-102     (    102) [001] ..... 1.000006: sys_enter: NR 0 (0)",
        "CPU:1 [LOST 7 EVENTS]",
        "",
    ]))
    assert tally.lost_lines == 7
    by_comm = {comm: tally.named(counts) for comm, counts in tally.by_comm().items()}
    assert by_comm["runc:[2:INIT]"] == {"getpid": 1}
    assert by_comm["busybox"] == {"read": 1}
    assert [(p["tgid"], p["exec"]) for p in tally.processes()] == [(101, 0), (102, 0), (102, 1)]


# ---- real traces -------------------------------------------------------------------------------

@tracing
def test_the_workload_is_counted_and_a_bystander_is_not(tmp_path):
    bystander = Bystander(tmp_path)
    workload = Workload(tmp_path)
    try:
        with SyscallTrace([workload.proc.pid], "workload") as trace:
            workload.release()
            result = trace.result()
    finally:
        bystander.stop()
    assert result.complete, result.evidence
    missing = WORKLOAD_CALLS - result.names
    assert not missing, f"calls the workload made are missing: {missing}"
    assert result.names & {"clone", "clone3"}, sorted(result.names)
    assert "getpriority" not in result.names, "a bystander's call was counted"
    assert "mkdir" in result.names_of("python3")
    assert result.total_events == sum(result.counts.values())
    json.dumps(result.to_json())


@tracing
def test_threads_from_before_need_their_tids_and_later_ones_follow_by_event_fork(tmp_path):
    """The kernel's pid filter matches task ids, and event-fork adds what a traced task
    clones, threads included: a thread already running when tracing starts is missed
    unless its tid is written too."""
    seen = {}
    for follow in (False, True):
        workload = Workload(tmp_path, f"follow-{follow}")
        workload.wait_threads(2)
        with SyscallTrace([workload.proc.pid], f"threads-{follow}",
                          follow_existing=follow) as trace:
            workload.release()
            seen[follow] = trace.result()
        assert seen[follow].complete, seen[follow].evidence
    assert "getsid" in seen[False].names, "a thread started during tracing was not followed"
    assert "getpgid" not in seen[False].names, "the kernel followed a pre-existing thread"
    assert {"getsid", "getpgid"} <= seen[True].names


@tracing
def test_grandchildren_forked_during_tracing_are_counted(tmp_path):
    workload = Workload(tmp_path)
    with SyscallTrace([workload.proc.pid], "grandchildren") as trace:
        child, grandchild = workload.release()
        result = trace.result()
    by_tgid = {p["tgid"]: p for p in result.processes}
    assert {workload.proc.pid, child, grandchild} <= set(by_tgid), result.processes
    assert "getpgrp" in by_tgid[grandchild]["syscalls"]
    assert "exit_group" in by_tgid[grandchild]["syscalls"]


@tracing
def test_the_instance_is_removed_after_the_block_an_exception_and_ctrl_c(tmp_path):
    mounts_before = _tracefs_mounts()
    for failure in (None, RuntimeError, KeyboardInterrupt):
        sleeper = subprocess.Popen(["sleep", "30"])
        try:
            trace = SyscallTrace([sleeper.pid], f"removed-{failure}")
            if failure is None:
                with trace:
                    root = trace.mount.root
                    assert trace.instance.name in _instances(root)
            else:
                with pytest.raises(failure):
                    with trace:
                        root = trace.mount.root
                        assert trace.instance.name in _instances(root)
                        raise failure("inside the block")
        finally:
            sleeper.kill()
            sleeper.wait()
        assert trace.instance_removed
        assert not trace.instance.exists()
        if not trace.mount.root or not Path(trace.mount.root).is_dir():
            continue  # a private mount of ours: gone with its mount point
        assert trace.instance.name not in _instances(trace.mount.root)
    assert _tracefs_mounts() == mounts_before, "a tracefs mount was left behind"


@tracing
def test_two_traces_at_once_see_only_their_own_processes(tmp_path):
    """They overlap and the first one started ends first, while the second still runs:
    its teardown (instance, and a private tracefs mount if it made one) must leave the
    second one's intact."""
    bystander = Bystander(tmp_path)
    workload = Workload(tmp_path)
    other = SyscallTrace([bystander.proc.pid], "bystander")
    try:
        other.__enter__()
        try:
            with SyscallTrace([workload.proc.pid], "workload") as trace:
                assert other.instance != trace.instance
                seen_by_other = other.result()
                other.__exit__(None, None, None)
                workload.release()
                result = trace.result()
        finally:
            other.__exit__(None, None, None)
    finally:
        bystander.stop()
    assert "getpriority" in seen_by_other.names
    assert "getpriority" not in result.names
    assert not (seen_by_other.names & {"mkdir", "connect", "getsid", "getpgrp"})
    assert {"mkdir", "connect", "getsid", "getpgrp"} <= result.names
    assert result.complete and seen_by_other.complete


@tracing
def test_an_instance_left_by_a_dead_process_is_removed():
    gone = subprocess.Popen(["true"])
    gone.wait()
    with TracefsMount() as root:
        stale = root / "instances" / f"{INSTANCE_PREFIX}{gone.pid}-0000-stale"
        os.mkdir(stale)
        try:
            assert stale.name in remove_stale_instances(root)
            assert not stale.exists()
        finally:
            if stale.exists():
                os.rmdir(stale)


# ---- pods of the node backend ------------------------------------------------------------------

POD_WORKLOAD = ["sh", "-c", "mkdir /tmp/x; ls / >/dev/null; cat /proc/self/status >/dev/null; "
                "echo hi > /tmp/f"]


@pytest.fixture(scope="module")
def node(sandbox_node):
    return sandbox_node


@tracing
@pytest.mark.integration
@pytest.mark.parametrize("runtime_name", ["runc", "runsc"])
def test_host_syscalls_of_a_pod_while_a_workload_runs_in_it(node, runtime_name):
    from sandcheck.clusters.base import PodSpec

    runtime = next((r for r in node.runtimes if r.name == runtime_name), None)
    if runtime is None:
        pytest.skip(f"{runtime_name} is not available on this node: run "
                    f"`sandcheck provision --runtimes {runtime_name}`")
    pod = node.create_pod(PodSpec(runtime=runtime, name_prefix="systrace"))
    try:
        pids = node.host_pids(pod)
        assert pids, pod.diagnostics()
        with SyscallTrace(pids, runtime_name) as trace:
            done = pod.exec(POD_WORKLOAD)
            result = trace.result()
        assert done.exit_code == 0, done.evidence()
    finally:
        node.delete_pod(pod)
    summary = {"runtime": runtime_name, "distinct": result.distinct,
               "total_events": result.total_events, "lost_events": result.lost_events,
               "distinct_by_comm": {c: len(v) for c, v in result.by_comm.items()},
               "processes": [(p["tgid"], p["exec"], p["comms"], p["argv0"], p["distinct"])
                             for p in result.processes]}
    print(f"\nhost syscalls of a {runtime_name} pod: {json.dumps(summary)}")
    assert result.names, result.evidence
    assert result.complete, result.evidence
    if runtime_name == "runsc":
        sentry = [p for p in result.processes if (p["argv0"] or "").endswith("runsc-sandbox")]
        assert sentry and sentry[0]["syscalls"], result.processes
        assert set(result.by_comm) & {"exe", "runsc-sandbox"}, sorted(result.by_comm)
