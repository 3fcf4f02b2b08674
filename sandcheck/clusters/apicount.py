"""Counting the API requests a run makes: the load a fleet run puts on a real API server.

A certify run on 1,000 nodes is bounded by what the API server accepts, so the requests
are counted where they leave the client, in the one place every request passes: the
backend's ApiFlow (sandcheck/clusters/apiflow.py), which also paces them. It counts every
REST call of the backend's ApiClient (reads, creates, deletes, watch opens, their retries)
by HTTP method, every exec (a websocket of an ApiClient of its own per exec, counted at
its handshake) and the requests of the backend's kubectl runs.
"""

from __future__ import annotations

from typing import Any

from sandcheck.clusters.apiflow import ApiFlow, flow_of


def count_requests(backend: Any) -> ApiFlow:
    """The flow that counts ``backend``'s requests (``total()``, ``snapshot()``); one with
    the default limits is attached to its client if it has none yet."""
    flow = flow_of(backend.api_client)
    if flow is None:
        flow = ApiFlow()
        flow.attach(backend.api_client)
    return flow
