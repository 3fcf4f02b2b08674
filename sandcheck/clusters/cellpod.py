"""The pod of one node × class cell of a fleet run: every probe report the cell's checks
judge, produced at start and read back with one log request.

Checking a node × class used to take one pod per security context (default, no seccomp
filter, no capabilities, restricted, privileged) and an exec per probe run: nine API round
trips and a websocket each, per cell, which a thousand nodes cannot afford. The cell pod
holds those security contexts as containers of one pod. Each container runs its probe
modes once at start and keeps the documents in the pod's shared /dev/shm; the ``probe`` container
waits for them, prints them all to its log between marker lines and then turns ready, so
the fleet learns from the pod's watch that the log is complete and reads it once. The
containers then sleep, so the checks that look at a live pod (describe, CRI, host
processes) still can.

Pure: the manifest and the log's parsing; the fleet (``fleet``) sends and reads them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from sandcheck.clusters.base import PodSpec
from sandcheck.clusters.kubemanifest import pod_manifest
from sandcheck.containerd.images import PROBE_IMAGE

CELL_LABEL = "sandcheck.dev/cell"
"""Label of cell pods: the fleet's watch selects them."""
COLLECTOR = "probe"
"""The container that prints every report: the pod's first container, the one exec,
describe and ``kubectl logs`` default to."""
REPORTS = "/dev/shm/sandcheck-cell"
"""Where the containers leave their reports: the pod's /dev/shm, one tmpfs that every
runtime shares among a pod's containers (the IPC namespace's). A volume would do too, but
the escape checks rightly count a volume as a host path mounted in (gVisor serves even an
in-memory emptyDir through its gofer), and the pod must show them what a plain pod shows."""
MARK = "### sandcheck-report"
END = f"{MARK}-end"


@dataclass(frozen=True)
class Variant:
    """A security context the checks ask for, as a container of the cell pod, with the
    probe modes the checks run in it."""

    container: str
    modes: tuple[str, ...]
    seccomp: str = "RuntimeDefault"
    privileged: bool = False
    drop_capabilities: tuple[str, ...] = ()
    run_as_user: int | None = None
    allow_privilege_escalation: bool | None = None

    def spec(self, base: PodSpec) -> PodSpec:
        return replace(base, seccomp=self.seccomp, privileged=self.privileged,
                       drop_capabilities=list(self.drop_capabilities),
                       run_as_user=self.run_as_user,
                       allow_privilege_escalation=self.allow_privilege_escalation)


NOBODY = 65534
VARIANTS: tuple[Variant, ...] = (
    Variant(COLLECTOR, ("json", "escape")),
    Variant("unfiltered", ("json",), seccomp="Unconfined"),
    Variant("nocap", ("json",), seccomp="Unconfined", drop_capabilities=("ALL",)),
    Variant("restricted", ("escape",), drop_capabilities=("ALL",), run_as_user=NOBODY,
            allow_privilege_escalation=False),
    Variant("privileged", ("escape",), seccomp="Unconfined", privileged=True),
)
"""The pods of isolation and escape checks (suites/isolation, suites/security), by their
security context; a check asking for another pod gets a pod of its own."""


def variant_of(spec: PodSpec) -> Variant | None:
    """The cell container a check's pod spec is served by: same security context, the
    default command and nothing else asked for (pure)."""
    asked = replace(spec, name_prefix=PodSpec.name_prefix, node_name=None)
    plain = PodSpec(runtime=spec.runtime)
    return next((v for v in VARIANTS if v.spec(plain) == asked), None)


def _runner(variant: Variant) -> str:
    """Shell (busybox) of a container: each mode's stdout, stderr and exit code into the
    shared dir, the exit code last (its file is what the collector waits for)."""
    return (f'mkdir -p -m 1777 {REPORTS}; for m in {" ".join(variant.modes)}; do '
            f'/probe "$m" >"{REPORTS}/$0.$m.out" 2>"{REPORTS}/$0.$m.err"; '
            f'echo $? >"{REPORTS}/$0.$m.tmp"; mv "{REPORTS}/$0.$m.tmp" "{REPORTS}/$0.$m.rc"; '
            'done')


def _collector(wait_seconds: float) -> str:
    keys = " ".join(f"{v.container}.{m}" for v in VARIANTS for m in v.modes)
    tenths = max(1, int(wait_seconds * 10))
    return (f'{_runner(VARIANTS[0])}; i=0; '
            f'for k in {keys}; do while [ ! -f "{REPORTS}/$k.rc" ] && [ $i -lt {tenths} ]; '
            'do sleep 0.1; i=$((i+1)); done; done; '
            f'for k in {keys}; do '
            f'echo "{MARK} $k out $(cat "{REPORTS}/$k.rc" 2>/dev/null || echo none)"; '
            f'cat "{REPORTS}/$k.out" 2>/dev/null; echo; '
            f'echo "{MARK} $k err"; cat "{REPORTS}/$k.err" 2>/dev/null; echo; done; '
            f'echo "{END}"; touch "{REPORTS}/done"; exec /probe sleep')


def cell_manifest(base: PodSpec, name: str, namespace: str, run_id: str, wait_seconds: float,
                  image: str = PROBE_IMAGE, pull_policy: str = "Never") -> dict[str, Any]:
    """The cell pod of ``base`` (its runtime and node): one container per variant
    (pure). ``wait_seconds`` bounds the collector's wait for the other reports."""
    pods = [pod_manifest(v.spec(base), name, namespace, run_id, image, pull_policy)
            for v in VARIANTS]
    body = pods[0]
    body["metadata"]["labels"][CELL_LABEL] = "true"
    containers = []
    for variant, pod in zip(VARIANTS, pods, strict=True):
        container = pod["spec"]["containers"][0]
        script = _collector(wait_seconds) if variant.container == COLLECTOR \
            else f"{_runner(variant)}; exec /probe sleep"
        container.update(name=variant.container,
                         command=["/bin/sh", "-c", script, variant.container])
        containers.append(container)
    containers[0]["readinessProbe"] = {
        "exec": {"command": ["/bin/cat", f"{REPORTS}/done"]},
        "periodSeconds": 1, "failureThreshold": 1000000}
    body["spec"]["containers"] = containers
    return body


@dataclass
class Report:
    """One probe run of the cell: its container, mode, exit code, output and the document."""

    container: str
    mode: str
    exit_code: int | None
    stdout: str
    stderr: str
    data: dict[str, Any] | None
    problem: str | None = None

    def evidence(self, pod: str) -> dict[str, Any]:
        return {"what": f"/probe {self.mode} at the start of container {self.container} of "
                        f"pod {pod}, read from its log", "exit_code": self.exit_code,
                "output": self.stdout[-20000:], "stderr": self.stderr[-4000:]}


def parse_log(text: str) -> dict[tuple[str, str], Report]:
    """(container, mode) -> Report from the collector's log (pure). A report whose run
    failed, never came or is no JSON carries ``problem``; a log without the end marker
    (the pod ended early) raises ValueError."""
    if END not in text:
        raise ValueError(f"the cell's log has no end marker ({END!r}); it ends: "
                         f"{text[-300:]!r}")
    reports: dict[tuple[str, str], Report] = {}
    current: Report | None = None
    stream = ""
    chunks: dict[str, list[str]] = {}
    for line in text.split("\n"):
        if line.startswith(MARK + " "):
            key, stream, *rest = line[len(MARK) + 1:].split(" ")
            container, _, mode = key.partition(".")
            if stream == "out":
                code = rest[0] if rest else "none"
                current = Report(container, mode, int(code) if code.lstrip("-").isdigit()
                                 else None, "", "", None)
                reports[(container, mode)] = current
                chunks = {"out": [], "err": []}
            continue
        if line == END:
            break
        if current is not None:
            chunks[stream].append(line)
            current.stdout = "\n".join(chunks["out"]).strip("\n")
            current.stderr = "\n".join(chunks["err"]).strip("\n")
    for report in reports.values():
        report.problem = _judge(report)
    return reports


def _judge(report: Report) -> str | None:
    if report.exit_code is None:
        return f"/probe {report.mode} in container {report.container} gave no exit code " \
               "within the cell's wait"
    if report.exit_code != 0:
        return f"/probe {report.mode} exited {report.exit_code} in container " \
               f"{report.container}: {report.stderr.strip()[-500:] or report.stdout[-500:]}"
    try:
        report.data = json.loads(report.stdout)
    except json.JSONDecodeError as exc:
        return f"/probe {report.mode} output in container {report.container} is not " \
               f"JSON ({exc}): {report.stdout[:300]!r}"
    return None
