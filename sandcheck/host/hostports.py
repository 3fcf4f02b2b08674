"""The host's iptables chains of the CNI portmap plugin (pods' hostPort mappings).

portmap removes a pod's own rules when the pod goes, but keeps its top-level chains (with
their fixed mark and masquerade rules) and the jumps into them from the nat table's
built-in chains. A run removes those too once no pod of any run maps a host port (the
DNAT chain holds no jump to a pod's chain), so the host's nat table is as the run found it.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess

from sandcheck.host.proc import run

DNAT = "CNI-HOSTPORT-DNAT"
CHAINS = (DNAT, "CNI-HOSTPORT-SETMARK", "CNI-HOSTPORT-MASQ")
"""What portmap adds to the nat table beside each pod's CNI-DN-* chain."""


def _rules(table: str, chain: str | None = None) -> list[str] | None:
    """``iptables -S`` lines of a chain (None: no such chain)."""
    argv = ["iptables", "-w", "-t", table, "-S", *([chain] if chain else [])]
    proc = run(argv, check=False)
    return None if proc.returncode != 0 else proc.stdout.splitlines()


def idle_chains_removed() -> list[str]:
    """Remove portmap's top-level chains and the jumps into them once no pod maps a host
    port; returns what was done (nothing while a pod anywhere still does)."""
    if shutil.which("iptables") is None:
        return []
    present = [c for c in CHAINS if _rules("nat", c) is not None]
    if not present or any(line.startswith("-A ") for line in _rules("nat", DNAT) or []):
        return []
    done = []
    for line in _rules("nat") or []:
        words = shlex.split(line)
        if words[:1] == ["-A"] and "-j" in words and words[words.index("-j") + 1] in present:
            try:
                run(["iptables", "-w", "-t", "nat", "-D", *words[1:]])
                done.append(f"iptables -t nat {line.replace('-A', '-D', 1)}")
            except subprocess.CalledProcessError:
                pass
    for chain in present:
        run(["iptables", "-w", "-t", "nat", "-F", chain], check=False)
        if run(["iptables", "-w", "-t", "nat", "-X", chain], check=False).returncode == 0:
            done.append(f"iptables -t nat -F/-X {chain}")
    return done
