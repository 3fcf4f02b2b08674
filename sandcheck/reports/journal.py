"""The journal of a run: every finished check, one JSON line each, as it finishes.

``results.json`` is written once, at the end of a run; a run killed before (``kill -9``,
an OOM kill, a lost machine) would otherwise leave nothing of what it finished. The
journal, ``results.journal.jsonl`` in the report dir, is appended to after each check:

- the first line names the run's identity (selection version, backend, runtimes, node
  selector), when it started, and which process writes it; a resumed run adds a
  ``session`` line and goes on appending;
- then ``check`` lines (a Check as results.json holds it, the pytest item that made it and
  the item's node slot), ``metric`` lines, ``environment`` lines carrying the environment
  keys that changed since the last one, a ``run`` line with the run id of the process'
  backend, and a ``fleet_nodes`` line once the fleet has resolved the node slots (slot i
  is its i-th node).

Each line is written and flushed at once, so it is in the kernel's page cache: a killed
process loses only the checks in flight. Lines are fsynced at most TIMEOUTS.journal_sync
apart while lines are added (one fsync per second at most, a few milliseconds each), so a
power loss costs at most about that much; the writer holds an exclusive flock on the file,
so a second process cannot write the same journal while the first lives (the kernel drops
the lock when it dies, however it dies). A reader ignores a last line cut short by the
kill; any other unreadable line is an error.

A run that ends normally writes results.json and removes its journal: the bundle's
manifest then covers exactly what it covered before. A journal in a report dir means its
run did not end.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sandcheck.reports.results import Check, Metric
from sandcheck.timeouts import TIMEOUTS

JOURNAL = "results.journal.jsonl"
FORMAT = 1


class JournalError(ValueError):
    """A journal that cannot be read, or one another live process is writing."""


def journal_path(report_dir: Path, worker: str | None = None) -> Path:
    """The journal of a run (of one pytest-xdist worker: ``results.journal-gw0.jsonl``)."""
    name = JOURNAL if worker is None else JOURNAL.replace(".jsonl", f"-{worker}.jsonl")
    return Path(report_dir) / name


def journal_paths(report_dir: Path) -> list[Path]:
    """Every journal in a report dir (the run's, or its workers')."""
    return sorted(Path(report_dir).glob(JOURNAL.replace(".jsonl", "*.jsonl")))


def _line(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, default=str, separators=(",", ":")) + "\n").encode()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _drop_cut_tail(f) -> None:
    """Cut a last line that a kill left without its newline (appending after it would
    glue the next line to it)."""
    size = f.seek(0, os.SEEK_END)
    end = size
    block = 1 << 16
    while end > 0:
        start = max(0, end - block)
        f.seek(start)
        chunk = f.read(end - start)
        nl = chunk.rfind(b"\n")
        if nl >= 0:
            keep = start + nl + 1
            if keep != size:
                f.truncate(keep)
            return
        end = start
    f.truncate(0)


class JournalWriter:
    """Appends records to a journal; ``resume`` continues an existing one."""

    def __init__(self, path: Path, identity: dict[str, Any], resume: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(self.path, "r+b" if resume and self.path.exists() else "w+b")
        try:
            fcntl.flock(self.file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.close()
            raise JournalError(f"{self.path} is being written by another live process "
                               f"({_owner(self.path)})") from None
        self.last_sync = time.monotonic()
        self.unsynced = 0
        me = {"started": _now(), "pid": os.getpid(), "host": socket.gethostname()}
        if resume and self.file.seek(0, os.SEEK_END) > 0:
            _drop_cut_tail(self.file)
            self.file.seek(0, os.SEEK_END)
            self._write({"session": me})
        else:
            self.file.truncate(0)
            self._write({"journal": FORMAT, "identity": identity, **me})
        self.sync()

    def _write(self, record: dict[str, Any]) -> None:
        self.file.write(_line(record))
        self.file.flush()
        self.unsynced += 1

    def check(self, check: Check, item: str, slot: int | None = None,
              slot_node: str | None = None) -> None:
        self._write({"check": vars(check), "item": item, "slot": slot,
                     "slot_node": slot_node})

    def metric(self, metric: Metric) -> None:
        self._write({"metric": asdict(metric)})

    def run(self, run_id: str) -> None:
        """The run id of this process' backend (its namespace, its RuntimeClass uses)."""
        self._write({"run": run_id})

    def fleet_nodes(self, nodes: list[str]) -> None:
        """The nodes the fleet selected, sorted: node slot i is ``nodes[i]``."""
        self._write({"fleet_nodes": list(nodes)})

    def environment(self, changed: dict[str, Any]) -> None:
        if changed:
            self._write({"environment": changed})

    def tick(self) -> None:
        """After a batch of lines: fsync if the last one is TIMEOUTS.journal_sync ago."""
        if self.unsynced and time.monotonic() - self.last_sync >= TIMEOUTS.journal_sync:
            self.sync()

    def sync(self) -> None:
        os.fsync(self.file.fileno())
        self.last_sync = time.monotonic()
        self.unsynced = 0

    def close(self, remove: bool = False) -> None:
        if self.file.closed:
            return
        self.sync()
        if remove:
            self.path.unlink(missing_ok=True)
        self.file.close()  # drops the lock


def _owner(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            head = json.loads(f.readline())
        return f"pid {head.get('pid')} on {head.get('host')}, started {head.get('started')}"
    except (OSError, ValueError):
        return "its header is unreadable"


def busy(path: Path) -> str | None:
    """Who holds the journal's lock (a live writer), or None."""
    try:
        with open(path, "rb") as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return _owner(path)
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    except FileNotFoundError:
        return None
    return None


@dataclass
class Finished:
    """One finished pytest item: its node slot as the run resolved it."""

    item: str
    slot: int | None = None
    slot_node: str | None = None


@dataclass
class JournalState:
    """What a journal says: the run's identity, its sessions, and what they finished."""

    identity: dict[str, Any]
    sessions: list[dict[str, Any]] = field(default_factory=list)
    checks: dict[str, Check] = field(default_factory=dict)
    """By nodeid, in the order they finished; a later line of the same nodeid wins."""
    items: dict[str, Finished] = field(default_factory=dict)
    metrics: list[Metric] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)
    fleet_nodes: list[str] | None = None
    """The nodes the journaled run's fleet selected (slot i is the i-th)."""
    run_ids: list[str] = field(default_factory=list)
    """The run id of each process that wrote (what it made on a cluster is named by it)."""
    cut: list[str] = field(default_factory=list)
    """Journals whose last line was cut short (ignored)."""

    def slot_names(self) -> dict[int, str | None]:
        """Slot index -> the node it resolved to in the journaled run (None: the slot was
        beyond the selection), for every slot a finished item ran on."""
        nodes = self.fleet_nodes
        return {f.slot: (f.slot_node if nodes is None else
                         nodes[f.slot] if f.slot < len(nodes) else None)
                for f in self.items.values() if f.slot is not None}

    def item_checks(self) -> list[Check]:
        """The checks that are pytest items (not the specs an item recorded)."""
        return [c for c in self.checks.values() if c.nodeid in self.items]


def _apply(state: JournalState, record: dict[str, Any]) -> None:
    if "check" in record:
        check = Check(**record["check"])
        state.checks.pop(check.nodeid, None)  # re-inserted: its order is its last finish
        state.checks[check.nodeid] = check
        item = record.get("item") or check.nodeid
        state.items[item] = Finished(item, record.get("slot"), record.get("slot_node"))
    elif "metric" in record:
        state.metrics.append(Metric(**record["metric"]))
    elif "environment" in record:
        state.environment.update(record["environment"])
    elif "run" in record:
        state.run_ids.append(record["run"])
    elif "fleet_nodes" in record:
        state.fleet_nodes = list(record["fleet_nodes"])
    elif "session" in record:
        state.sessions.append(record["session"])


def read_journal(path: Path, state: JournalState | None = None) -> JournalState:
    """Read one journal (into ``state``: the journals of one run's workers add up), line by
    line (a fleet's journal holds tens of thousands)."""
    path = Path(path)
    cut = False
    with open(path, "rb") as f:
        head_line = f.readline()
        if not head_line.endswith(b"\n"):
            raise JournalError(f"{path}: no complete first line (the run was killed before "
                               "it had written one)")
        try:
            head = json.loads(head_line)
        except ValueError:
            raise JournalError(f"{path}: line 1 is no journal header") from None
        if not isinstance(head, dict) or head.get("journal") != FORMAT:
            version = head.get("journal") if isinstance(head, dict) else None
            raise JournalError(f"{path}: journal format {version!r} is not {FORMAT}")
        if state is None:
            state = JournalState(identity=head.get("identity") or {})
        elif state.identity != head.get("identity"):
            raise JournalError(f"{path}: a journal of another run than its neighbours")
        state.sessions.append({k: head.get(k) for k in ("started", "pid", "host")})
        for n, raw in enumerate(f, 2):
            if not raw.endswith(b"\n"):
                cut = True  # the last line, cut short by the kill: ignored
                break
            try:
                record = json.loads(raw)
            except ValueError:
                raise JournalError(f"{path}: line {n} is not JSON (the file was changed)"
                                   ) from None
            _apply(state, record)
    if cut:
        state.cut.append(str(path))
    return state


def read_journals(paths: list[Path]) -> JournalState | None:
    state = None
    for path in paths:
        state = read_journal(path, state)
    return state
