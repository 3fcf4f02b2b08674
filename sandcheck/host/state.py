"""What a daemon may change on the host outside its work dir, snapshotted before and
compared (and, for sysctls, restored) after: kernel settings, network links, firewall
rules. dockerd and privileged nodes write some of these on their own."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from sandcheck.host.proc import run

SYSCTLS = (
    "net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding", "net/ipv6/conf/default/forwarding",
    "net/bridge/bridge-nf-call-iptables", "net/bridge/bridge-nf-call-ip6tables",
    "net/ipv4/conf/all/route_localnet", "fs/file-max", "fs/nr_open",
    "fs/inotify/max_user_watches", "fs/inotify/max_user_instances", "kernel/panic",
    "kernel/panic_on_oops", "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
    "vm/overcommit_memory", "vm/panic_on_oom", "kernel/pid_max",
)
"""Settings dockerd, kubelet, systemd or kube-proxy are known to write."""
PROC_SYS = Path("/proc/sys")


def _links() -> frozenset[str]:
    return frozenset(p.name for p in Path("/sys/class/net").iterdir())


def _rules() -> dict[str, str]:
    """Firewall rules as their dump commands print them, counters left out."""
    out = {}
    for tool in ("iptables-save", "ip6tables-save"):
        if shutil.which(tool):
            proc = run([tool], check=False)
            out[tool] = "\n".join(line for line in proc.stdout.splitlines()
                                  if not line.startswith("#") and not line.startswith(":"))
    if shutil.which("nft"):
        out["nft"] = run(["nft", "list", "ruleset"], check=False).stdout
    return out


@dataclass
class HostState:
    sysctls: dict[str, str] = field(default_factory=dict)
    links: frozenset[str] = frozenset()
    rules: dict[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls) -> HostState:
        values = {}
        for key in SYSCTLS:
            try:
                values[key] = (PROC_SYS / key).read_text().strip()
            except OSError:
                continue
        return cls(sysctls=values, links=_links(), rules=_rules())

    def differences(self, now: HostState | None = None) -> list[str]:
        """What changed since this snapshot, one line each (empty: nothing)."""
        now = now or HostState.read()
        lines = [f"sysctl {k}: {v} -> {now.sysctls.get(k)}" for k, v in self.sysctls.items()
                 if now.sysctls.get(k) != v]
        lines += [f"new link {name}" for name in sorted(now.links - self.links)]
        lines += [f"link {name} is gone" for name in sorted(self.links - now.links)]
        lines += [f"{tool} rules changed" for tool, text in self.rules.items()
                  if now.rules.get(tool) != text]
        return lines

    def restore_sysctls(self) -> list[str]:
        """Write back every setting that changed; lines say what was restored."""
        done = []
        for key, value in self.sysctls.items():
            path = PROC_SYS / key
            try:
                if path.read_text().strip() != value:
                    path.write_text(value + "\n")
                    done.append(f"restored {key} = {value}")
            except OSError as exc:
                done.append(f"could not restore {key} = {value}: {exc}")
        return done
