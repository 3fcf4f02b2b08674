"""The x86_64 syscall table: number -> name, one place for the seccomp reader and the
tracer.

Names come from the kernel's uapi header (Debian's linux-libc-dev, which gcc's libc6-dev
pulls in), plus the entries newer than many distributions' headers: Debian 12's ends at
450, while the kernels under test go beyond.
"""

from __future__ import annotations

import re
from pathlib import Path

from sandcheck.errors import UserError

UNISTD_64 = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")
NEWER_SYSCALLS = {
    451: "cachestat", 452: "fchmodat2", 453: "map_shadow_stack", 454: "futex_wake",
    455: "futex_wait", 456: "futex_requeue", 457: "statmount", 458: "listmount",
    459: "lsm_get_self_attr", 460: "lsm_set_self_attr", 461: "lsm_list_modules",
    462: "mseal", 463: "setxattrat", 464: "getxattrat", 465: "listxattrat",
    466: "removexattrat", 467: "open_tree_attr", 468: "file_getattr", 469: "file_setattr",
    470: "listns",
}
"""arch/x86/entry/syscalls/syscall_64.tbl entries past Debian 12's header; the header wins
where it has a number."""


def syscall_table(path: Path = UNISTD_64) -> dict[int, str]:
    """Syscall number -> name."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise UserError(f"cannot read the syscall table {path} ({exc}): the x86_64 syscall "
                        "names come from Debian's linux-libc-dev; run `apt-get install -y "
                        "linux-libc-dev`") from None
    found = {int(nr): name for name, nr in
             re.findall(r"^#define\s+__NR_(\w+)\s+(\d+)\s*$", text, re.MULTILINE)}
    if not found:
        raise UserError(f"{path} defines no __NR_ syscall numbers: reinstall linux-libc-dev")
    return {**NEWER_SYSCALLS, **found}


def syscall_name(number: int, names: dict[int, str]) -> str:
    return names.get(number, f"syscall_{number}")
