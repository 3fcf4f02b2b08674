"""The host syscall surface of processes: the seccomp filters the kernel holds for them,
read back with ptrace and evaluated for every syscall number of x86_64.

A runtime's profile on paper (an OCI spec, gVisor's source) is not what runs; the kernel's
copy is. For a runc/crun container that is its own process; for gVisor the Sentry
(``runsc-sandbox``) and the Gofer (``runsc-gofer``), which make host syscalls on the
workload's behalf. The reachable set of a pod is the union over its host processes.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import signal
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import product
from pathlib import Path
from typing import Any

from sandcheck.errors import ComponentError, UserError
from sandcheck.host import bpf
from sandcheck.host.memory import process_name
from sandcheck.host.syscalls import syscall_table
from sandcheck.timeouts import TIMEOUTS, WaitTimeout, wait_until

PTRACE_DETACH, PTRACE_SEIZE, PTRACE_INTERRUPT = 17, 0x4206, 0x4207
PTRACE_SECCOMP_GET_FILTER = 0x420C
PTRACE_EVENT_STOP = 128
WALL = 0x40000000
MODE_DISABLED, MODE_STRICT, MODE_FILTER = 0, 1, 2
STRICT_ALLOWED = frozenset({"read", "write", "exit", "rt_sigreturn"})
RUNS = (bpf.ALLOW, bpf.LOG)
DELEGATED = (bpf.TRACE, bpf.USER_NOTIF)
"""Actions whose syscall a tracer or a supervisor may still let run."""
KINDS = ("allowed", "conditional", "denied")


@lru_cache(maxsize=4)
@dataclass(frozen=True)
class Verdict:
    kind: str
    """allowed, conditional (the arguments or the caller's address decide, or a tracer
    or supervisor does) or denied."""
    actions: tuple[str, ...]
    reads_args: bool = False
    reads_ip: bool = False
    examples: tuple[tuple[str, tuple[tuple[str, int], ...]], ...] = ()
    """(action, arguments taking it) where the filters allow finding them."""


ALLOWED = Verdict("allowed", ("ALLOW",))


def _word_name(offset: int) -> str:
    if offset >= bpf.ARGS_OFFSET:
        return f"args[{(offset - bpf.ARGS_OFFSET) // 8}]"
    return "instruction_pointer"


def _example(witness: dict[int, int]) -> tuple[tuple[str, int], ...]:
    values: dict[str, int] = {}
    for offset, word in witness.items():  # a u64 is two words, low one first
        name = _word_name(offset)
        values[name] = values.get(name, 0) | word << (32 if offset % 8 else 0)
    return tuple(sorted(values.items()))


def _verdict(outcomes: Sequence[bpf.Outcome]) -> Verdict:
    combos = {bpf.combine(rets) for rets in product(*(sorted(o.rets) for o in outcomes))}
    reads_args = any(o.reads_args for o in outcomes)
    reads_ip = any(o.reads_ip for o in outcomes)
    names = tuple(sorted({bpf.action_name(r) for r in combos}))
    if not any(bpf.action(r) in RUNS + DELEGATED for r in combos):
        return Verdict("denied", names, reads_args, reads_ip)
    if all(bpf.action(r) in RUNS for r in combos) and not (reads_args or reads_ip):
        return Verdict("allowed", names)
    forks = [i for i, o in enumerate(outcomes) if len(o.paths) > 1]
    examples: dict[str, tuple] = {}
    if len(forks) == 1:  # one filter decides by the arguments: its paths are the answers
        rets = [o.paths[0].ret for o in outcomes]
        for path in outcomes[forks[0]].paths:
            witness = path.witness()
            rets[forks[0]] = path.ret
            if witness is not None:
                examples.setdefault(bpf.action_name(bpf.combine(rets)), _example(witness))
    return Verdict("conditional", names, reads_args, reads_ip, tuple(sorted(examples.items())))


@lru_cache(maxsize=32)
def evaluate(filters: tuple[bytes, ...]) -> tuple[dict[int, Verdict], dict[str, dict[str, int]]]:
    """Verdicts for every x86_64 syscall number up to the table's highest (a filter's
    answer to a number without a name is the same kind of fact), and a summary of what
    the filters do with the same numbers from a foreign arch: i386 and x32."""
    progs = [bpf.decode(raw) for raw in filters]
    numbers = range(max(syscall_table()) + 1)

    def verdict(nr: int, arch: int) -> Verdict:
        return _verdict([bpf.explore(p, nr, arch) for p in progs])

    native = {nr: verdict(nr, bpf.AUDIT_ARCH_X86_64) for nr in numbers}
    foreign = {}
    for label, arch, bit in (("i386", bpf.AUDIT_ARCH_I386, 0),
                             ("x32", bpf.AUDIT_ARCH_X86_64, bpf.X32_SYSCALL_BIT)):
        seen = Counter(f"{v.kind} {'|'.join(v.actions)}"
                       for v in (verdict(nr | bit, arch) for nr in numbers))
        foreign[label] = dict(seen.most_common())
    return native, foreign


@dataclass
class Surface:
    """What one process (or, from ``union``, several) may ask of the host kernel."""

    pid: int | None
    comm: str
    mode: int
    """Seccomp mode: 0 none, 1 strict, 2 filter (of a union: the least confined)."""
    filters: int
    verdicts: dict[str, Verdict]
    unnamed_reachable: list[int] = field(default_factory=list)
    """Numbers without a name in the table that the filters let through."""
    foreign: dict[str, dict[str, int]] = field(default_factory=dict)
    threads_differ: dict[int, int | None] = field(default_factory=dict)
    """Tasks whose Seccomp_filters count is not the leader's (only the leader is read)."""
    parts: list[Surface] = field(default_factory=list)

    @property
    def reachable(self) -> set[str]:
        return {name for name, v in self.verdicts.items() if v.kind != "denied"}

    @property
    def counts(self) -> dict[str, int]:
        kinds = Counter(v.kind for v in self.verdicts.values())
        return {**{k: kinds[k] for k in KINDS}, "reachable": len(self.reachable)}

    def evidence(self) -> dict[str, Any]:
        """JSON for a report: the counts, the reachable names, what decides the
        conditional ones and how the rest are refused."""
        conditional = {n: {"actions": list(v.actions), "reads_args": v.reads_args,
                           "reads_ip": v.reads_ip,
                           "examples": {a: {k: hex(x) for k, x in ex} for a, ex in v.examples}}
                       for n, v in sorted(self.verdicts.items()) if v.kind == "conditional"}
        denied = Counter("|".join(v.actions) for v in self.verdicts.values()
                         if v.kind == "denied")
        return {"pid": self.pid, "comm": self.comm, "mode": self.mode, "filters": self.filters,
                "counts": self.counts, "reachable": sorted(self.reachable),
                "conditional": conditional, "denied_by_action": dict(denied.most_common()),
                "unnamed_reachable": self.unnamed_reachable, "foreign_arch": self.foreign,
                "threads_with_other_filter_count": {str(t): n for t, n in
                                                    self.threads_differ.items()},
                "parts": [{k: v for k, v in p.evidence().items() if k in (
                    "pid", "comm", "mode", "filters", "counts",
                    "threads_with_other_filter_count")} for p in self.parts]}


# ---- reading the kernel's copy -----------------------------------------------------------

class ProcessGone(ComponentError):
    """The process exited before its filters were read."""


def _vanished(pid: int, cause: object) -> ComponentError:
    return ProcessGone(f"pid {pid}: process vanished before its seccomp filters were "
                          f"read ({cause})")


def seccomp_status(pid: int) -> tuple[int, int | None]:
    """(Seccomp mode, Seccomp_filters count; None before Linux 5.9) from /proc."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError) as exc:
        raise _vanished(pid, exc) from None
    fields = dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)
    if fields.get("State", "").startswith(("Z", "X")):
        raise _vanished(pid, "it is a zombie")
    if "Seccomp" not in fields:
        raise ComponentError(f"pid {pid}: /proc/{pid}/status has no Seccomp line: the "
                             "kernel is built without CONFIG_SECCOMP")
    filters = fields.get("Seccomp_filters")
    return int(fields["Seccomp"]), None if filters is None else int(filters)


def threads_differing(pid: int, filters: int | None) -> dict[int, int | None]:
    """Tasks of ``pid`` whose filter count differs from ``filters`` (the leader's)."""
    other = {}
    for task in Path(f"/proc/{pid}/task").glob("[0-9]*"):
        try:
            mode, n = seccomp_status(int(task.name))
        except ComponentError:
            continue  # a thread that ended meanwhile
        if n != filters and int(task.name) != pid:
            other[int(task.name)] = n
    return other


@lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
    libc.ptrace.restype = ctypes.c_long
    return libc


def _ptrace(request: int, pid: int, addr: int | None, data: Any, what: str) -> int:
    result = _libc().ptrace(request, pid, addr, data)
    if result < 0:
        code = ctypes.get_errno()
        if code == errno.ESRCH:
            raise _vanished(pid, f"{what}: ESRCH")
        hint = {errno.EPERM: "it is traced already, or this process lacks CAP_SYS_PTRACE",
                errno.EACCES: "this process needs CAP_SYS_ADMIN and no seccomp filter "
                              "of its own",
                errno.EIO: "the kernel lacks CONFIG_CHECKPOINT_RESTORE",
                errno.EINVAL: "it left seccomp filter mode",
                errno.EMEDIUMTYPE: "the filter was not installed as classic BPF"}
        cause = f"{what}: {errno.errorcode.get(code, code)}"
        raise ComponentError(f"pid {pid} ({process_name(pid)}): cannot read its seccomp "
                             f"filters: {cause} ({hint.get(code, os.strerror(code))})")
    return result


def _waitpid(pid: int, flags: int) -> tuple[int, int]:
    try:
        return os.waitpid(pid, WALL | flags)
    except ChildProcessError as exc:
        raise _vanished(pid, exc) from None


def _wait_stopped(pid: int) -> int:
    """Wait for the tracee's stop; returns a signal to hand back at detach (one whose
    delivery the stop intercepted), else 0. A tracee in the kernel stops only when it
    leaves it, and cannot be released before: after a while of polling this blocks."""
    def changed() -> int | None:
        got, status = _waitpid(pid, os.WNOHANG)
        return status if got else None

    try:
        status = wait_until(changed, TIMEOUTS.ptrace_stop, f"pid {pid} to stop",
                            interval=TIMEOUTS.ptrace_stop_poll)
    except WaitTimeout:
        status = _waitpid(pid, 0)[1]
    if not os.WIFSTOPPED(status):
        raise _vanished(pid, f"wait status 0x{status:x}")
    sig = os.WSTOPSIG(status)
    return sig if status >> 16 == 0 and sig != signal.SIGTRAP else 0


def _filter(pid: int, index: int) -> bytes | None:
    """Filter ``index`` of a stopped tracee; None past the newest."""
    what = f"PTRACE_SECCOMP_GET_FILTER {index}"
    if _libc().ptrace(PTRACE_SECCOMP_GET_FILTER, pid, index, None) < 0:
        if ctypes.get_errno() == errno.ENOENT:
            return None
    length = _ptrace(PTRACE_SECCOMP_GET_FILTER, pid, index, None, what)
    buf = ctypes.create_string_buffer(length * 8)
    length = _ptrace(PTRACE_SECCOMP_GET_FILTER, pid, index, buf, what)
    return buf.raw[:length * 8]


def read_filters(pid: int) -> list[bytes]:
    """The classic BPF programs of ``pid``'s filters, oldest first (as the kernel indexes
    them). The task is seized, interrupted just long enough to copy them, and always
    detached again: it resumes as it was, with any signal caught meanwhile re-sent."""
    _ptrace(PTRACE_SEIZE, pid, None, None, "PTRACE_SEIZE")
    stopped, sig = False, 0
    try:
        _ptrace(PTRACE_INTERRUPT, pid, None, None, "PTRACE_INTERRUPT")
        sig, stopped = _wait_stopped(pid), True
        progs: list[bytes] = []
        while (prog := _filter(pid, len(progs))) is not None:
            progs.append(prog)
        return progs
    finally:
        if stopped:
            _ptrace(PTRACE_DETACH, pid, None, sig, "PTRACE_DETACH")


def surface(pid: int) -> Surface:
    """The seccomp surface of ``pid`` (its thread group leader)."""
    if platform.machine() != "x86_64":
        raise UserError(f"seccomp surfaces are evaluated for x86_64, not {platform.machine()}")
    table = syscall_table()
    mode, n = seccomp_status(pid)
    comm, differ = process_name(pid), threads_differing(pid, n)
    if mode == MODE_DISABLED:
        verdicts = dict.fromkeys(table.values(), ALLOWED)
        return Surface(pid, comm, mode, 0, verdicts, [], {}, differ)
    if mode == MODE_STRICT:
        verdicts = {name: ALLOWED if name in STRICT_ALLOWED else Verdict("denied", ("KILL",))
                    for name in table.values()}
        return Surface(pid, comm, mode, 0, verdicts, [], {}, differ)
    progs = tuple(read_filters(pid))
    native, foreign = evaluate(progs)
    verdicts = {table[nr]: v for nr, v in native.items() if nr in table}
    unnamed = [nr for nr, v in native.items() if nr not in table and v.kind != "denied"]
    return Surface(pid, comm, mode, len(progs), verdicts, unnamed, foreign, differ)


def _loosest(verdicts: Iterable[Verdict]) -> Verdict:
    return min(verdicts, key=lambda v: KINDS.index(v.kind))


def union(parts: Sequence[Surface]) -> Surface:
    """Several surfaces as one: a syscall is as reachable as the process that reaches it
    most freely (a pod's surface over its host processes)."""
    if not parts:
        raise ValueError("a union needs at least one surface")
    names = set().union(*(p.verdicts for p in parts))
    verdicts = {n: _loosest(p.verdicts[n] for p in parts if n in p.verdicts) for n in names}
    unnamed = sorted(set().union(*(p.unnamed_reachable for p in parts)))
    return Surface(None, "+".join(sorted({p.comm for p in parts})), min(p.mode for p in parts),
                   max(p.filters for p in parts), verdicts, unnamed, {}, {}, list(parts))


def surface_of(pids: Iterable[int], skip_gone: bool = False) -> Surface:
    """The union of the surfaces of ``pids``; with ``skip_gone``, processes that exit
    meanwhile are left out (short-lived children of a workload; a child's filters are its
    parent's or stricter)."""
    parts = []
    for pid in sorted(set(pids)):
        try:
            parts.append(surface(pid))
        except ProcessGone:
            if not skip_gone:
                raise
    if not parts:
        raise ProcessGone(f"every one of the processes {sorted(set(pids))} exited before "
                          "its filters were read")
    return union(parts)
