"""Classic BPF as seccomp runs it, in pure Python: decode a filter the kernel hands back,
and follow every path one syscall number can take through it.

The syscall number and architecture are known when a filter is evaluated for a syscall;
the instruction pointer and the arguments are not. Words loaded from those offsets stay
symbolic: a test on them forks both ways, so a rule that depends on arguments shows up
as several outcomes instead of whichever one arguments of zero happen to pick. A path
that no arguments can take is only cut where the arguments are known exactly (an
equality already taken on the same word, or the same test repeated); anything else is
kept, so the set of outcomes may be larger than the truth but never misses a reachable one.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import count
from typing import NamedTuple

# struct seccomp_data { int nr; u32 arch; u64 instruction_pointer; u64 args[6]; }
DATA_SIZE = 64
IP_OFFSET = 8
ARGS_OFFSET = 16
AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
X32_SYSCALL_BIT = 0x40000000

# Classes, sizes, modes, operations and sources of <linux/filter.h>.
LD, LDX, ST, STX, ALU, JMP, RET, MISC = range(8)
W, ABS, MEM, LEN, IMM = 0x00, 0x20, 0x60, 0x80, 0x00
K, X = 0x00, 0x08
ADD, SUB, MUL, DIV, OR, AND, LSH, RSH, NEG, XOR = (0x00, 0x10, 0x20, 0x30, 0x40, 0x50,
                                                  0x60, 0x70, 0x80, 0xA0)
JA, JEQ, JGT, JGE, JSET = 0x00, 0x10, 0x20, 0x30, 0x40
RET_A = 0x10
TAX, TXA = 0x00, 0x80
MASK = 0xFFFFFFFF

# Actions, most restrictive first: the kernel runs every filter and keeps this order.
KILL_PROCESS, KILL_THREAD, TRAP, ERRNO = 0x80000000, 0x00000000, 0x00030000, 0x00050000
USER_NOTIF, TRACE, LOG, ALLOW = 0x7FC00000, 0x7FF00000, 0x7FFC0000, 0x7FFF0000
ACTION_NAMES = {KILL_PROCESS: "KILL_PROCESS", KILL_THREAD: "KILL_THREAD", TRAP: "TRAP",
                ERRNO: "ERRNO", USER_NOTIF: "USER_NOTIF", TRACE: "TRACE", LOG: "LOG",
                ALLOW: "ALLOW"}
MAX_PATHS = 20000
"""Paths followed for one syscall before giving up (compilers emit trees, not blow-ups)."""


class BpfError(ValueError):
    """A program this interpreter (or seccomp) does not accept."""


class Insn(NamedTuple):
    code: int
    jt: int
    jf: int
    k: int


def decode(raw: bytes) -> list[Insn]:
    """struct sock_filter[] (u16 code, u8 jt, u8 jf, u32 k; host byte order)."""
    if len(raw) % 8:
        raise BpfError(f"{len(raw)} bytes is not a whole number of instructions")
    return [Insn(*fields) for fields in struct.iter_unpack("=HBBI", raw)]


def encode(insns: Iterable[Sequence[int]]) -> bytes:
    return b"".join(struct.pack("=HBBI", *insn) for insn in insns)


def action(ret: int) -> int:
    return ret & 0xFFFF0000


def action_name(ret: int) -> str:
    act, data = action(ret), ret & 0xFFFF
    name = ACTION_NAMES.get(act, f"UNKNOWN_0x{act:08x}")
    return f"{name}({data})" if act in (ERRNO, TRAP, TRACE) else name


def allows(ret: int) -> bool:
    """The syscall runs (LOG runs it too; TRACE and USER_NOTIF leave it to another
    process, so they are not counted here)."""
    return action(ret) in (ALLOW, LOG)


def _rank(ret: int) -> int:
    act = action(ret)  # the kernel compares actions as signed 32-bit values
    return act - (1 << 32) if act & 0x80000000 else act


def combine(rets: Sequence[int]) -> int:
    """The kernel's answer from several filters' returns, given oldest filter first: the
    most restrictive action; of equal actions the newest filter's (its errno wins)."""
    best = rets[-1]
    for ret in reversed(rets[:-1]):
        if _rank(ret) < _rank(best):
            best = ret
    return best


class Sym(NamedTuple):
    """A value computed from one unknown 32-bit word of seccomp_data by ALU ops with
    constants; ``word`` None is a value no single word explains (never solved)."""

    word: int | None
    ops: tuple[tuple[int, int], ...] = ()


def _alu(op: int, a: int, b: int) -> int | None:
    if op == ADD:
        return (a + b) & MASK
    if op == SUB:
        return (a - b) & MASK
    if op == MUL:
        return (a * b) & MASK
    if op == DIV:
        return None if b == 0 else a // b
    if op == OR:
        return a | b
    if op == AND:
        return a & b
    if op == LSH:
        return (a << (b & 31)) & MASK
    if op == RSH:
        return a >> (b & 31)
    if op == NEG:
        return -a & MASK
    if op == XOR:
        return a ^ b
    raise BpfError(f"ALU operation 0x{op:02x} is not allowed in seccomp filters")


def _apply(sym: Sym, word: int) -> int:
    value = word
    for op, k in sym.ops:
        value = _alu(op, value, k)
        if value is None:  # division by a constant zero: refused by the kernel's checker
            raise BpfError("division by zero")
    return value


def _test(op: int, a: int, b: int) -> bool:
    return {JEQ: a == b, JGT: a > b, JGE: a >= b, JSET: bool(a & b)}[op]


@dataclass(frozen=True)
class Path:
    ret: int
    tests: tuple[tuple[Sym, int, int, bool], ...]
    """(value, JEQ/JGT/JGE/JSET, constant, taken) of every test on unknown words."""

    def witness(self) -> dict[int, int] | None:
        """Word offset -> a value taking this path, when one is found among values the
        constants suggest (evidence only; None says "not found", not "impossible")."""
        found: dict[int, int] = {}
        for word in {s.word for s, *_ in self.tests}:
            if word is None:
                return None
            tests = [t for t in self.tests if t[0].word == word]
            tried = {0, 1, MASK, 0x80000000, 0x7FFFFFFF}
            for sym, _, k, _ in tests:
                masks = [m for op, m in sym.ops if op == AND]
                tried |= {k, (k + 1) & MASK, (k - 1) & MASK, ~k & MASK}
                tried |= {k | (~m & MASK) for m in masks} | set(masks)
            ok = [v for v in sorted(tried)
                  if all(_test(op, _apply(s, v), k) == taken for s, op, k, taken in tests)]
            if not ok:
                return None
            found[word] = ok[0]
        return found


@dataclass
class Outcome:
    """Every path of one program for one (arch, nr)."""

    paths: list[Path] = field(default_factory=list)
    reads: set[int] = field(default_factory=set)
    """Offsets of seccomp_data loaded beyond nr and arch."""

    @property
    def rets(self) -> set[int]:
        return {p.ret for p in self.paths}

    @property
    def reads_args(self) -> bool:
        return any(off >= ARGS_OFFSET for off in self.reads)

    @property
    def reads_ip(self) -> bool:
        return any(IP_OFFSET <= off < ARGS_OFFSET for off in self.reads)


class _State(NamedTuple):
    pc: int
    a: int | Sym
    x: int | Sym
    mem: tuple[int | Sym, ...]
    tests: tuple[tuple[Sym, int, int, bool], ...]


def _known(sym: Sym, tests: tuple) -> int | None:
    """The value of ``sym`` when an equality taken on this path pins it down."""
    for s, op, k, taken in tests:
        if op == JEQ and taken and s.word == sym.word and sym.word is not None:
            if s == sym:
                return k
            if not s.ops:
                return _apply(sym, k)
    return None


def explore(prog: Sequence[Insn], nr: int, arch: int,
            known: dict[int, int] | None = None) -> Outcome:
    """Follow every path of ``prog`` for syscall ``nr`` on ``arch``; ``known`` gives
    other words of seccomp_data (offset -> u32), making them concrete."""
    fixed = {0: nr & MASK, 4: arch, **(known or {})}
    out, opaque = Outcome(), count()
    todo = [_State(0, 0, 0, (0,) * 16, ())]
    while todo:
        if len(out.paths) + len(todo) > MAX_PATHS:
            raise BpfError(f"more than {MAX_PATHS} paths for syscall {nr}")
        st = todo.pop()
        if st.pc >= len(prog):
            raise BpfError(f"fell off the end of the program at {st.pc}")
        code, jt, jf, k = prog[st.pc]
        cls, nxt = code & 7, st.pc + 1
        if cls in (LD, LDX):
            mode = code & 0xE0
            if mode == ABS and code & 0x18 == W:
                if k % 4 or k >= DATA_SIZE:
                    raise BpfError(f"load from offset {k} of seccomp_data")
                if k not in (0, 4):
                    out.reads.add(k)
                val: int | Sym = fixed[k] if k in fixed else Sym(k)
            elif mode == IMM:
                val = k
            elif mode == MEM:
                val = st.mem[k & 15]
            elif mode == LEN:
                val = DATA_SIZE
            else:
                raise BpfError(f"load mode 0x{code:02x} is not allowed in seccomp filters")
            st = st._replace(a=val) if cls == LD else st._replace(x=val)
        elif cls in (ST, STX):
            mem = list(st.mem)
            mem[k & 15] = st.a if cls == ST else st.x
            st = st._replace(mem=tuple(mem))
        elif cls == MISC:
            st = st._replace(x=st.a) if code & 0xF8 == TAX else st._replace(a=st.x)
        elif cls == ALU:
            op, b = code & 0xF0, (st.x if code & X else k)
            a = st.a
            if isinstance(a, int) and isinstance(b, int):
                res = _alu(op, a, b)
                if res is None:  # A / X with X == 0 ends the program returning 0
                    out.paths.append(Path(0, st.tests))
                    continue
                a = res
            elif isinstance(a, Sym) and isinstance(b, int) and a.word is not None:
                a = Sym(a.word, (*a.ops, (op, b)))
            else:
                a = Sym(None, (("opaque", next(opaque)),))
            st = st._replace(a=a)
        elif cls == JMP:
            op = code & 0xF0
            if op == JA:
                todo.append(st._replace(pc=nxt + k))
                continue
            if op not in (JEQ, JGT, JGE, JSET):
                raise BpfError(f"jump 0x{code:02x} is not allowed in seccomp filters")
            a, b = st.a, (st.x if code & X else k)
            if isinstance(a, Sym) and isinstance(b, int) and _known(a, st.tests) is not None:
                a = _known(a, st.tests)
            if isinstance(a, int) and isinstance(b, int):
                todo.append(st._replace(pc=nxt + (jt if _test(op, a, b) else jf)))
                continue
            if not isinstance(b, int) or isinstance(a, int):
                a, b = Sym(None, (("opaque", next(opaque)),)), 0
            for taken, off in ((True, jt), (False, jf)):
                test = (a, op, b, taken)
                if (a, op, b, not taken) not in st.tests:
                    todo.append(st._replace(pc=nxt + off, tests=(*st.tests, test)))
            continue
        elif cls == RET:
            ret = st.a if code & 0x18 == RET_A else k
            if isinstance(ret, Sym):
                raise BpfError("the return value is computed from the arguments")
            out.paths.append(Path(ret, st.tests))
            continue
        todo.append(st._replace(pc=nxt))
    return out


def run(prog: Sequence[Insn], nr: int, arch: int = AUDIT_ARCH_X86_64,
        args: Sequence[int] = (), ip: int = 0) -> int:
    """The return of ``prog`` for one concrete seccomp_data."""
    words = [ip & MASK, ip >> 32 & MASK]
    for arg in (*args, *[0] * (6 - len(args))):
        words += [arg & MASK, arg >> 32 & MASK]
    (path,) = explore(prog, nr, arch, {8 + 4 * i: w for i, w in enumerate(words)}).paths
    return path.ret
