"""The thread that drains a tracefs instance's trace_pipe while the workload runs.

The ring buffer is finite: read only at the end, a busy workload would overrun it and the
count would miss calls. Read all along on a thread of its own, it stays nearly empty;
once tracing stops, the thread reads on until the pipe has been quiet a few times, and it
is never closed under a read in progress.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sandcheck.timeouts import TIMEOUTS

READ_BYTES = 1 << 16
QUIET_READS = 3
"""After tracing stops, the pipe counts as drained when this many reads
``TIMEOUTS.trace_idle`` apart find it empty (a commit in flight on another CPU when
tracing stopped lands in between)."""
DRAIN_TIMEOUT = TIMEOUTS.component_stop


class PipeReader:
    """Hands every chunk of a trace_pipe to ``feed``, from ``start()`` until ``finish()``
    has seen the pipe drained; ``bytes`` says how much was read, ``error`` why the
    reading ended early (None when it did not)."""

    def __init__(self, feed: Callable[[str], None]):
        self.feed = feed
        self.fd: int | None = None
        self.thread: threading.Thread | None = None
        self.stopping = threading.Event()
        self.abort = threading.Event()
        self.bytes = 0
        self.error: str | None = None

    def start(self, pipe: Path, name: str) -> None:
        self.fd = os.open(pipe, os.O_RDONLY | os.O_NONBLOCK)
        self.thread = threading.Thread(target=self._drain, daemon=True, name=name)
        self.thread.start()

    def _drain(self) -> None:
        quiet = 0
        while not self.abort.is_set():
            try:
                chunk = os.read(self.fd, READ_BYTES)
            except BlockingIOError:
                chunk = None
            except OSError as exc:
                self.error = str(exc)
                return
            if chunk:
                quiet = 0
                self.bytes += len(chunk)
                self.feed(chunk.decode(errors="replace"))
                continue
            if self.stopping.is_set():
                quiet += 1
                if quiet >= QUIET_READS or chunk == b"":
                    return
            time.sleep(TIMEOUTS.trace_idle)

    def finish(self) -> None:
        """Wait for the drain to finish; one that cannot keep up is told to stop (between
        two reads) so the pipe is never closed under it, and ``error`` says so."""
        self.stopping.set()
        if self.thread is None or not self.thread.is_alive():
            return
        self.thread.join(DRAIN_TIMEOUT)
        if self.thread.is_alive():
            self.abort.set()
            self.thread.join(DRAIN_TIMEOUT)
            self.error = f"the pipe was not drained within {DRAIN_TIMEOUT:.0f}s"

    def close(self) -> None:
        """Stop reading for good and close the pipe."""
        self.abort.set()
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
