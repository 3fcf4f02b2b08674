"""The seccomp reader (sandcheck/host/seccomp.py, sandcheck/host/bpf.py): the interpreter on
hand-assembled programs, the kernel's copy of a filter read back from a live process
(which must go on running as if nothing happened), and the host processes of real runc
and runsc pods.

A reader that evaluated the filter wrongly, or read another process's, would still
produce a plausible list of names; only known filters whose every verdict is checked
catch that.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sandcheck.errors import ComponentError
from sandcheck.host import bpf
from sandcheck.host.memory import process_name, process_tree
from sandcheck.host.seccomp import (
    evaluate,
    surface,
    surface_of,
    union,
)
from sandcheck.host.syscalls import syscall_table

LD_ABS = bpf.LD | bpf.W | bpf.ABS
JEQ, JGE, JSET = (bpf.JMP | op | bpf.K for op in (bpf.JEQ, bpf.JGE, bpf.JSET))
RET = bpf.RET | bpf.K
NR = {"read": 0, "write": 1, "getpid": 39, "mkdir": 83, "personality": 135,
      "kexec_load": 246, "open_by_handle_at": 304}
EPERM, EINVAL = 1, 22
ERRNO_EPERM, ERRNO_EINVAL = bpf.ERRNO | EPERM, bpf.ERRNO | EINVAL
PER_QUERY = 0xFFFFFFFF
CLONE_NEWUSER = 0x10000000


def op(code: int, k: int = 0, jt: int = 0, jf: int = 0) -> tuple[int, int, int, int]:
    return (code, jt, jf, k)


def program(*insns: tuple[int, int, int, int]) -> bytes:
    return bpf.encode(insns)


ARCH_CHECK = (op(LD_ABS, 4), op(JEQ, bpf.AUDIT_ARCH_X86_64, jt=1), op(RET, bpf.KILL_PROCESS))
ALLOW_LIST = program(*ARCH_CHECK, op(LD_ABS, 0), op(JEQ, NR["read"], jt=2),
                     op(JEQ, NR["write"], jt=1), op(RET, ERRNO_EPERM), op(RET, bpf.ALLOW))
DENY_LIST = program(op(LD_ABS, 0), op(JEQ, NR["kexec_load"], jt=2),
                    op(JEQ, NR["open_by_handle_at"], jt=2), op(RET, bpf.ALLOW),
                    op(RET, ERRNO_EPERM), op(RET, bpf.KILL_THREAD))
# personality(0xffffffff) (a query) only; the same word tested twice, as compilers do.
PERSONALITY_QUERY = program(*ARCH_CHECK, op(LD_ABS, 0), op(JEQ, NR["personality"], jf=5),
                            op(LD_ABS, 16), op(JEQ, PER_QUERY, jf=2), op(LD_ABS, 16),
                            op(JEQ, PER_QUERY, jt=1, jf=0), op(RET, ERRNO_EINVAL),
                            op(RET, bpf.ALLOW))
# The child's filter: EPERM for getpid and mkdir, personality queries only, else ALLOW.
CHILD_FILTER = program(*ARCH_CHECK, op(LD_ABS, 0), op(JEQ, NR["getpid"], jt=6),
                       op(JEQ, NR["mkdir"], jt=5), op(JEQ, NR["personality"], jf=3),
                       op(LD_ABS, 16), op(JEQ, PER_QUERY, jt=1), op(RET, ERRNO_EINVAL),
                       op(RET, bpf.ALLOW), op(RET, ERRNO_EPERM))
ARITHMETIC_ACTIONS = {bpf.ALLOW, bpf.ERRNO | 7}


def native(*filters: bytes) -> dict[int, object]:
    return evaluate(tuple(filters))[0]


# ---- the interpreter ----------------------------------------------------------------------

def test_allow_list_and_foreign_arch():
    verdicts, foreign = evaluate((ALLOW_LIST,))
    assert verdicts[NR["read"]].kind == verdicts[NR["write"]].kind == "allowed"
    assert {v.actions for nr, v in verdicts.items() if nr > 1} == {("ERRNO(1)",)}
    assert {v.kind for nr, v in verdicts.items() if nr > 1} == {"denied"}
    numbers = len(verdicts)
    assert foreign["i386"] == {"denied KILL_PROCESS": numbers}
    assert foreign["x32"] == {"denied ERRNO(1)": numbers}  # this filter forgot the x32 bit
    assert bpf.run(bpf.decode(ALLOW_LIST), 0, bpf.AUDIT_ARCH_I386) == bpf.KILL_PROCESS


def test_deny_list():
    verdicts = native(DENY_LIST)
    assert verdicts[NR["kexec_load"]].actions == ("ERRNO(1)",)
    assert verdicts[NR["open_by_handle_at"]].actions == ("KILL_THREAD",)
    denied = {nr for nr, v in verdicts.items() if v.kind == "denied"}
    assert denied == {NR["kexec_load"], NR["open_by_handle_at"]}
    assert not any(v.reads_args for v in verdicts.values())


def test_argument_rule_is_conditional_with_an_example_per_action():
    prog = bpf.decode(PERSONALITY_QUERY)
    outcome = bpf.explore(prog, NR["personality"], bpf.AUDIT_ARCH_X86_64)
    assert outcome.rets == {bpf.ALLOW, ERRNO_EINVAL}  # the contradictory path is cut
    assert len(outcome.paths) == 2 and outcome.reads_args and not outcome.reads_ip
    verdict = native(PERSONALITY_QUERY)[NR["personality"]]
    assert verdict.kind == "conditional" and verdict.actions == ("ALLOW", "ERRNO(22)")
    examples = dict(verdict.examples)
    assert examples["ALLOW"] == (("args[0]", PER_QUERY),)
    arg = dict(examples["ERRNO(22)"])["args[0]"]
    assert bpf.run(prog, NR["personality"], args=[arg]) == ERRNO_EINVAL
    assert bpf.run(prog, NR["personality"], args=[PER_QUERY]) == bpf.ALLOW
    assert native(PERSONALITY_QUERY)[NR["read"]].kind == "allowed"


def test_masked_flags_and_high_word():
    # clone: refuse CLONE_NEWUSER in the low word, and any high bit of args[0].
    prog = program(op(LD_ABS, 0), op(JEQ, 56, jf=6), op(LD_ABS, 20), op(JEQ, 0, jf=3),
                   op(LD_ABS, 16), op(bpf.ALU | bpf.AND | bpf.K, CLONE_NEWUSER),
                   op(JEQ, 0, jt=1), op(RET, ERRNO_EPERM), op(RET, bpf.ALLOW))
    verdict = native(prog)[56]
    assert verdict.kind == "conditional" and set(verdict.actions) == {"ALLOW", "ERRNO(1)"}
    decoded = bpf.decode(prog)
    assert bpf.run(decoded, 56, args=[CLONE_NEWUSER | 0x11]) == ERRNO_EPERM
    assert bpf.run(decoded, 56, args=[1 << 40]) == ERRNO_EPERM
    assert bpf.run(decoded, 56, args=[0x11]) == bpf.ALLOW
    for path in bpf.explore(decoded, 56, bpf.AUDIT_ARCH_X86_64).paths:
        witness = path.witness()
        assert witness is not None
        args = [witness.get(16, 0) | witness.get(20, 0) << 32]
        assert bpf.run(decoded, 56, args=args) == path.ret


def test_reads_args_without_deciding_is_still_conditional():
    prog = program(op(LD_ABS, 24), op(JSET, 1, jt=0, jf=0), op(RET, bpf.ALLOW))
    verdict = native(prog)[NR["read"]]
    assert verdict.kind == "conditional" and verdict.actions == ("ALLOW",)
    assert verdict.reads_args


def test_instruction_pointer_dependence():
    prog = program(op(LD_ABS, 8), op(JGE, 0x1000, jt=1), op(RET, bpf.KILL_PROCESS),
                   op(RET, bpf.ALLOW))
    verdict = native(prog)[NR["write"]]
    assert verdict.kind == "conditional" and verdict.reads_ip and not verdict.reads_args
    assert bpf.run(bpf.decode(prog), 1, ip=0x2000) == bpf.ALLOW
    assert bpf.run(bpf.decode(prog), 1, ip=0x10) == bpf.KILL_PROCESS


def test_scratch_memory_alu_and_misc():
    # A = nr * 2 + 1 via X and scratch memory; ALLOW when 7 (nr 3), else ERRNO(7).
    prog = program(op(LD_ABS, 0), op(bpf.ST, k=3), op(bpf.LD | bpf.IMM, 2),
                   op(bpf.MISC | bpf.TAX), op(bpf.LD | bpf.MEM, 3),
                   op(bpf.ALU | bpf.MUL | bpf.X), op(bpf.ALU | bpf.ADD | bpf.K, 1),
                   op(bpf.MISC | bpf.TAX), op(bpf.STX, k=4), op(bpf.LD | bpf.IMM, 0),
                   op(bpf.LDX | bpf.IMM, 0), op(bpf.LDX | bpf.MEM, 4), op(bpf.MISC | bpf.TXA),
                   op(bpf.ALU | bpf.XOR | bpf.K, 7), op(JEQ, 0, jt=1),
                   op(RET, bpf.ERRNO | 7), op(RET, bpf.ALLOW))
    decoded = bpf.decode(prog)
    assert bpf.run(decoded, 3) == bpf.ALLOW
    assert {bpf.run(decoded, nr) for nr in range(10) if nr != 3} == {bpf.ERRNO | 7}
    # A / X with X == 0 ends the program with 0: KILL_THREAD.
    div = program(op(bpf.LDX | bpf.IMM, 0), op(bpf.LD | bpf.LEN), op(bpf.ALU | bpf.DIV | bpf.X),
                  op(RET, bpf.ALLOW))
    assert bpf.run(bpf.decode(div), 0) == bpf.KILL_THREAD
    length = program(op(bpf.LD | bpf.LEN), op(bpf.RET | bpf.RET_A))
    assert bpf.run(bpf.decode(length), 0) == bpf.DATA_SIZE
    with pytest.raises(bpf.BpfError):
        bpf.run(bpf.decode(program(op(bpf.LD | 0x08 | bpf.ABS, 0), op(RET, 0))), 0)


def test_several_filters_take_the_most_restrictive_action():
    order = [bpf.KILL_PROCESS, bpf.KILL_THREAD, bpf.TRAP, ERRNO_EPERM, bpf.USER_NOTIF,
             bpf.TRACE, bpf.LOG, bpf.ALLOW]
    for i, strongest in enumerate(order):
        assert bpf.combine(order[i:][::-1]) == strongest
        assert bpf.combine(order[i:]) == strongest
    assert bpf.combine([bpf.ERRNO | 1, bpf.ERRNO | 2]) == bpf.ERRNO | 2  # the newest's errno
    first = program(op(LD_ABS, 0), op(JEQ, NR["getpid"], jt=1), op(RET, bpf.LOG),
                    op(RET, ERRNO_EPERM))
    second = program(op(LD_ABS, 0), op(JEQ, NR["getpid"], jt=1), op(RET, bpf.ALLOW),
                     op(RET, bpf.TRAP))
    verdicts = native(first, second)
    assert verdicts[NR["getpid"]].actions == ("TRAP(0)",)
    assert verdicts[NR["read"]].actions == ("LOG",) and verdicts[NR["read"]].kind == "allowed"
    both = native(ALLOW_LIST, PERSONALITY_QUERY)
    assert both[NR["personality"]].kind == "denied"  # the allow-list refuses it anyway
    assert both[NR["read"]].kind == "allowed"


def test_syscall_table():
    table = syscall_table()
    assert table[0] == "read" and table[59] == "execve" and table[246] == "kexec_load"
    assert len(table) > 300


# ---- a real process -----------------------------------------------------------------------

CHILD = r"""
import ctypes, json, os, sys, threading
prog = bytes.fromhex(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
class Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
buf = ctypes.create_string_buffer(prog, len(prog))
fprog = Fprog(len(prog) // 8, ctypes.cast(buf, ctypes.c_void_p))
def install():
    assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
    assert libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) == 0  # PR_SET_SECCOMP, FILTER
if sys.argv[2] == "thread":  # only one thread, not the leader, gets the filter
    done = threading.Event()
    threading.Thread(target=lambda: (install(), done.set(), threading.Event().wait()),
                     daemon=True).start()
    done.wait()
    report = {}
else:
    install()
    try:
        os.mkdir(sys.argv[3])
        mkdir = 0
    except OSError as exc:
        mkdir = exc.errno
    report = {"getpid": libc.getpid(), "mkdir": mkdir,
              "personality": libc.personality(ctypes.c_ulong(0))}
print(json.dumps(report), flush=True)
for line in sys.stdin:
    print(line.strip(), flush=True)
"""


@pytest.fixture
def filtered_child(tmp_path):
    """Start children under a filter (CHILD_FILTER unless given), each echoing lines from
    stdin; all are killed at the end."""
    children = []

    def start(how: str = "process", prog: bytes = CHILD_FILTER) -> subprocess.Popen:
        child = subprocess.Popen([sys.executable, "-c", CHILD, prog.hex(), how,
                                  str(tmp_path / f"made-{len(children)}")],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        children.append(child)
        child.report = json.loads(child.stdout.readline())
        return child

    yield start
    for child in children:
        child.kill()
        child.wait()


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _tracer(pid: int) -> int:
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines()
                if x.startswith("TracerPid:"))
    return int(line.split()[1])


def _still_running(child: subprocess.Popen) -> None:
    assert child.poll() is None
    assert _state(child.pid) not in ("t", "T") and _tracer(child.pid) == 0  # not stopped
    child.stdin.write("still here\n")
    child.stdin.flush()
    assert child.stdout.readline().strip() == "still here"


def _needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("PTRACE_SECCOMP_GET_FILTER needs CAP_SYS_ADMIN: run as root")


def test_reads_the_filter_a_process_installed(filtered_child):
    _needs_root()
    child = filtered_child()
    assert child.report == {"getpid": -1, "mkdir": EPERM, "personality": -1}
    found = surface(child.pid)
    _still_running(child)
    assert (found.pid, found.mode, found.filters) == (child.pid, 2, 1)
    assert found.verdicts["getpid"].actions == found.verdicts["mkdir"].actions == ("ERRNO(1)",)
    assert found.verdicts["getpid"].kind == "denied"
    personality = found.verdicts["personality"]
    assert personality.kind == "conditional" and personality.actions == ("ALLOW", "ERRNO(22)")
    names = set(syscall_table().values())
    assert found.reachable == names - {"getpid", "mkdir"}
    assert found.counts == {"allowed": len(names) - 3, "conditional": 1, "denied": 2,
                            "reachable": len(names) - 2}
    assert set(found.foreign["i386"]) == {"denied KILL_PROCESS"}
    evidence = json.loads(json.dumps(found.evidence()))
    assert evidence["conditional"]["personality"]["examples"]["ALLOW"] == {
        "args[0]": hex(PER_QUERY)}
    assert surface(child.pid).verdicts == found.verdicts  # a second read finds the same
    _still_running(child)


def test_a_process_without_filter_reaches_everything():
    child = subprocess.Popen(["sleep", "60"])
    try:
        found = surface(child.pid)
        assert (found.mode, found.filters) == (0, 0)
        assert found.reachable == set(syscall_table().values())
        assert _state(child.pid) not in ("t", "T")
    finally:
        child.kill()
        child.wait()


def test_a_thread_with_other_filters_is_reported(filtered_child):
    _needs_root()
    child = filtered_child("thread")
    found = surface(child.pid)
    assert found.mode == 0 and list(found.threads_differ.values()) == [1]
    _still_running(child)


def test_vanished_process_is_one_clear_error():
    child = subprocess.Popen(["sleep", "60"])
    child.kill()
    child.wait()
    with pytest.raises(ComponentError, match=rf"pid {child.pid}: process vanished"):
        surface(child.pid)


def test_union_of_processes(filtered_child):
    _needs_root()
    first = filtered_child()
    second = filtered_child(prog=program(op(LD_ABS, 0), op(JEQ, NR["getpid"], jt=2),
                                         op(JEQ, NR["kexec_load"], jt=1), op(RET, bpf.ALLOW),
                                         op(RET, ERRNO_EPERM)))
    both = surface_of([second.pid, first.pid])
    names = set(syscall_table().values())
    assert both.reachable == names - {"getpid"}  # the one syscall both refuse
    assert both.verdicts["personality"].kind == "allowed"  # the second allows it outright
    assert both.verdicts["mkdir"].kind == "allowed" and both.mode == 2
    assert [p.pid for p in both.parts] == sorted([first.pid, second.pid])
    assert json.loads(json.dumps(both.evidence()))["counts"]["reachable"] == len(names) - 1
    _still_running(first)
    _still_running(second)


# ---- real pods ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def node(sandbox_node):
    return sandbox_node


def _pod_surfaces(node, name: str, record) -> tuple[object, dict[int, object], int]:
    """The pod and the surface of each of its host processes (errors recorded)."""
    from sandcheck.clusters.base import PodSpec

    runtime = next((r for r in node.runtimes if r.name == name), None)
    if runtime is None or name in node.missing_runtimes:
        pytest.skip(f"{name} cannot run on this node: {node.missing_runtimes.get(name)}")
    pod = node.create_pod(PodSpec(runtime=runtime, name_prefix=f"seccomp-{name}",
                                  seccomp="RuntimeDefault"))
    found, table = {}, {}
    try:
        for pid in process_tree(node.host_pids(pod)):
            try:
                found[pid] = surface(pid)
                table[pid] = {"name": process_name(pid), **found[pid].counts,
                              "filters": found[pid].filters}
            except ComponentError as exc:
                table[pid] = {"name": process_name(pid), "error": str(exc)}
        container_pid = node.inspect_pod(pod)["container"]["info"]["pid"]
    except BaseException:
        node.delete_pod(pod)
        raise
    print(f"\n{name} pod host processes:\n" + json.dumps(table, indent=1))
    record(f"seccomp_{name}", json.dumps(table))
    return pod, found, container_pid


@pytest.mark.integration
def test_runc_container_has_the_runtime_default_shape(node, record_property):
    pod, found, container_pid = _pod_surfaces(node, "runc", record_property)
    try:
        container = found[container_pid]
        assert container.mode == 2, container.evidence()
        assert 250 <= len(container.reachable) <= 400, container.counts
        assert {"read", "write", "execve"} <= container.reachable
        assert not {"kexec_load", "open_by_handle_at"} & container.reachable
        assert set(container.foreign["i386"]) != {"allowed ALLOW"}
        shims = [s for s in found.values() if s.comm.startswith("containerd-shim")]
        assert shims, "no containerd shim among the pod's host processes"
    finally:
        node.delete_pod(pod)


@pytest.mark.integration
def test_runsc_sentry_reaches_far_fewer_syscalls(node, record_property):
    pod, found, _ = _pod_surfaces(node, "runsc", record_property)
    try:
        sentry = [s for s in found.values() if s.comm == "runsc-sandbox"]
        assert sentry, f"no runsc-sandbox among {[s.comm for s in found.values()]}"
        reachable = union(sentry)
        print("runsc-sandbox reachable:", sorted(reachable.reachable))
        record_property("seccomp_runsc_sandbox", json.dumps(reachable.evidence()))
        assert reachable.mode == 2 and not any(s.threads_differ for s in sentry)
        assert 10 <= len(reachable.reachable) < 150, reachable.counts
        assert not {"kexec_load", "open_by_handle_at", "execve"} & reachable.reachable
        # What runs for the workload: the Sentry, its Gofers and the Sentry's children
        # (systrap's stub processes, where the application's own code runs).
        gvisor = union([s for s in found.values() if s.comm == "runsc-gofer"
                        or s is sentry[0] or _parent(s.pid) in {x.pid for x in sentry}])
        print("runsc sandbox+gofer+stubs:", gvisor.counts, sorted(gvisor.reachable))
        assert len(gvisor.reachable) < 200, gvisor.counts
    finally:
        node.delete_pod(pod)


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
