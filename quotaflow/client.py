"""A small client for quotaflow's HTTP API: send a prompt as a binary-mode CloudEvent and
wait for its final status."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

from quotaflow.events.catalog import REQUESTED_TYPE
from quotaflow.events.status import TERMINAL_STATUSES

TERMINAL = TERMINAL_STATUSES  # a request ends in one of these


class ApiError(RuntimeError):
    """A 4xx or 5xx answer; `problem` is its application/problem+json body."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(f"{status}: {problem.get('detail', problem)}")
        self.status = status
        self.problem = problem


def _call(method: str, url: str, key: str, body: bytes | None = None,
          headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=body, method=method,
                                 headers={"Authorization": f"Bearer {key}", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            problem = json.loads(raw)
        except ValueError:
            problem = {"detail": raw.decode(errors="replace")}
        raise ApiError(e.code, problem) from None


def submit(base_url: str, key: str, data: dict[str, Any], *, source: str = "/quotaflow/cli",
           event_id: str | None = None) -> dict[str, Any]:
    """POST `data` as a binary-mode CloudEvent; returns `{request_id, status_url}`. Sending the
    same `event_id` again is the same request."""
    headers = {"ce-specversion": "1.0", "ce-id": event_id or str(uuid.uuid4()),
               "ce-source": source, "ce-type": REQUESTED_TYPE,
               "Content-Type": "application/json"}
    _, body = _call("POST", base_url.rstrip("/") + "/", key, json.dumps(data).encode(), headers)
    return body


def status(base_url: str, key: str, request_id: str) -> dict[str, Any]:
    """The request's status, output and usage."""
    return _call("GET", f"{base_url.rstrip('/')}/v1/requests/{request_id}", key)[1]


def quota(base_url: str, key: str) -> dict[str, Any]:
    """The key's tenant's balance in its current period."""
    return _call("GET", f"{base_url.rstrip('/')}/v1/quota", key)[1]


def wait(base_url: str, key: str, request_id: str, timeout_s: float = 120,
         poll_s: float = 0.02) -> dict[str, Any]:
    """Poll the request's status until it ends or `timeout_s` passes; returns the last one."""
    deadline = time.monotonic() + timeout_s
    while True:
        st = status(base_url, key, request_id)
        if st["status"] in TERMINAL or time.monotonic() > deadline:
            return st
        time.sleep(poll_s)


def follow(base_url: str, key: str, request_id: str, timeout_s: float = 120) -> dict[str, Any]:
    """Read the request's server-sent events (`GET /v1/requests/{id}/events`) until its `end`
    event; that event's data (status, usage). Ends as soon as the request does, with no
    polling: for a request sent with `stream: true`, deltas arrive as they are generated."""
    req = urllib.request.Request(f"{base_url.rstrip('/')}/v1/requests/{request_id}/events",
                                 headers={"Authorization": f"Bearer {key}",
                                          "Accept": "text/event-stream"})
    event = ""
    with urllib.request.urlopen(req, timeout=timeout_s) as stream:
        for raw in stream:
            line = raw.decode().rstrip("\r\n")
            if line.startswith("event:"):
                event = line.partition(":")[2].strip()
            elif line.startswith("data:") and event == "end":
                ended: dict[str, Any] = json.loads(line.partition(":")[2])
                return ended
    raise ApiError(502, {"detail": f"the event stream of {request_id} closed before its end"})
