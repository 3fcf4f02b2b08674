"""A command in a pod's probe container through the API's exec subresource (a websocket),
and its exit code from the Status the error channel carries at the end.

The stream is read until the server closes it or the command's time runs out; a command
that does not finish in time comes back with exit code -1 and a line saying so, not an
exception, as does one that never ran.
"""

from __future__ import annotations

import time
from typing import Any

from sandcheck.clusters.apiflow import through
from sandcheck.clusters.base import ExecResult
from sandcheck.clusters.kubeapi import api_message
from sandcheck.errors import ComponentError
from sandcheck.timeouts import TIMEOUTS, WaitTimeout, wait_until


def exec_in_pod(api_client, name: str, namespace: str, argv: list[str], timeout: float,
                container: str = "probe") -> ExecResult:
    """Run ``argv`` in pod ``namespace/name`` through a client copied from ``api_client``'s
    configuration; ``timeout`` counts from before the connection."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException
    from kubernetes.stream import stream
    from kubernetes.stream.ws_client import ERROR_CHANNEL

    start = time.monotonic()
    # stream() rewires the ApiClient it is given; a client of its own per exec keeps
    # the shared one (and concurrent execs of a burst) intact.
    exec_api = client.CoreV1Api(client.ApiClient(api_client.configuration))
    try:
        # The handshake is paced, bounded and counted with the backend's requests.
        ws = through(api_client, "EXEC", stream, exec_api.connect_get_namespaced_pod_exec,
                     name, namespace, container=container, command=list(argv), stdin=False,
                     stdout=True, stderr=True, tty=False, _preload_content=False,
                     _request_timeout=timeout)
    except ApiException as exc:
        if isinstance(exc.__context__, (KeyboardInterrupt, SystemExit)):
            # The client turns a Ctrl-C during the handshake into an ApiException: the
            # interrupt goes on as itself, so the session ends instead of this check.
            raise exc.__context__ from None
        raise ComponentError(f"exec in {namespace}/{name} refused: {exc.status} "
                             f"{exc.reason}: {api_message(exc)}") from None
    except Exception as exc:  # websocket handshake errors
        raise ComponentError(f"exec in {namespace}/{name} failed: {exc}") from None
    out: list[str] = []
    err: list[str] = []

    def left() -> float:
        return timeout - (time.monotonic() - start)

    def closed() -> bool | None:
        """True once the server closed the stream; else reads what it sends for up to
        ``TIMEOUTS.exec_poll`` (never past the command's time) and returns None."""
        remaining = left()
        if ws.is_open() and remaining > 0:
            ws.update(timeout=min(TIMEOUTS.exec_poll, remaining))
            if ws.peek_stdout():
                out.append(ws.read_stdout())
            if ws.peek_stderr():
                err.append(ws.read_stderr())
        return None if ws.is_open() else True

    timed_out = False
    try:
        try:
            wait_until(closed, left(), f"exec in {namespace}/{name}", interval=0)
        except WaitTimeout:
            timed_out = True
        out.append(ws.read_stdout() if ws.peek_stdout() else "")
        err.append(ws.read_stderr() if ws.peek_stderr() else "")
        status_text = ws.read_channel(ERROR_CHANNEL)
    finally:
        ws.close()
    seconds = time.monotonic() - start
    if timed_out:
        err.append(f"\nsandcheck: exec did not finish within {timeout:.0f}s")
        return ExecResult(argv=list(argv), exit_code=-1, stdout="".join(out),
                          stderr="".join(err), seconds=seconds)
    code = exit_code_from_status(status_text)
    if code is None:
        err.append(f"\nsandcheck: the command did not run: {status_message(status_text)}")
        code = -1
    return ExecResult(argv=list(argv), exit_code=code, stdout="".join(out),
                      stderr="".join(err), seconds=seconds)


def exit_code_from_status(text: Any) -> int | None:
    """The exit code in the exec error channel's Status (pure).

    Success is ``{"status": "Success"}``; a non-zero exit is a Failure whose
    details.causes carry ``ExitCode``; anything else (a failure to start the command)
    has no exit code."""
    import json

    if not text:
        return None
    try:
        status = json.loads(text) if isinstance(text, str) else text
    except ValueError:
        return None
    if status.get("status") == "Success":
        return 0
    for cause in (status.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            try:
                return int(cause.get("message"))
            except (TypeError, ValueError):
                return None
    return None


def status_message(text: Any) -> str:
    """The message of an exec error channel's Status, else the text itself (pure)."""
    import json

    try:
        return json.loads(text).get("message") or str(text)
    except (TypeError, ValueError, AttributeError):
        return str(text)
