"""Sending the plan to admit over loopback HTTP, as a careful client would: an unanswered or
5xx send is sent again, the same event, until it is answered or its time budget runs out."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from quotaflow.chaos import hostile
from quotaflow.chaos.facts import Outcome
from quotaflow.chaos.plan import Send
from quotaflow.events.catalog import REQUESTED_TYPE

Request = tuple[str, dict[str, str], bytes]  # path, headers, body


def event_request(key: str, source: str, ce_id: str, data: dict[str, Any]) -> Request:
    """A binary-mode CloudEvent POST."""
    return "/", {"Authorization": f"Bearer {key}", "Content-Type": "application/json",
                 "ce-specversion": "1.0", "ce-type": REQUESTED_TYPE, "ce-source": source,
                 "ce-id": ce_id}, json.dumps(data).encode()


def _structured(key: str, source: str, ce_id: str, data: dict[str, Any]) -> Request:
    event = {"specversion": "1.0", "type": REQUESTED_TYPE, "source": source, "id": ce_id,
             "datacontenttype": "application/json", "data": data}
    return "/", {"Authorization": f"Bearer {key}",
                 "Content-Type": "application/cloudevents+json"}, json.dumps(event).encode()


def bad_request(name: str, key: str, send: Send, model: str) -> Request:
    """The bad input `name` (plan.BAD_INPUTS), as a POST the door must answer 4xx."""
    data: dict[str, Any] = {"model": model, "prompt": "a bad input", "max_tokens": 4}
    path, headers, body = event_request(key, send.source, send.ce_id, data)
    if name == "invalid-json":
        return path, headers, b'{"model": "' + model.encode() + b'", "prompt": '
    if name == "deep-json":
        return path, headers, b"[" * 5000 + b"]" * 5000
    if name == "nul-in-id":
        return _structured(key, send.source, send.ce_id + "\x00x", data)
    if name == "nul-in-source":
        return _structured(key, send.source + "\x00x", send.ce_id, data)
    if name == "lone-surrogate":
        return path, headers, b'{"model": "%s", "prompt": "a \\ud800 b", "max_tokens": 4}' % (
            model.encode())
    if name == "nul-in-prompt":
        return path, headers, json.dumps({**data, "prompt": "a \x00 b"}).encode()
    if name == "unknown-key":
        return path, {**headers, "Authorization": "Bearer qf_000000000000_nosuchsecret"}, body
    if name == "missing-id":
        return path, {k: v for k, v in headers.items() if k != "ce-id"}, body
    if name == "max-tokens-zero":
        return path, headers, json.dumps({**data, "max_tokens": 0}).encode()
    if name == "text-plain":
        return path, {**headers, "Content-Type": "text/plain"}, body
    if name == "too-large":
        return path, headers, json.dumps({**data, "prompt": "x" * 200_000}).encode()
    if name == "ce-datacontenttype-header":  # CloudEvents HTTP binding 3.1.1
        return path, {**headers, "ce-datacontenttype": "application/json"}, body
    structured: dict[str, dict[str, Any]] = {
        "time-not-rfc3339": {"time": "2026-01-01T00:00:00+0530"},
        "relative-dataschema": {"dataschema": "/schema.json"},
        "fraction-extension": {"chaosratio": 1.5}, "source-not-uri": {"source": "/a b"}}
    if name in structured:  # attribute types, CloudEvents 1.0.2
        path, headers, raw = _structured(key, send.source, send.ce_id, data)
        return path, headers, json.dumps({**json.loads(raw), **structured[name]}).encode()
    if name in ("temperature-nan", "temperature-huge"):  # numbers strict JSON cannot hold
        number = b"NaN" if name == "temperature-nan" else b"1e400"
        return path, headers, json.dumps(data).encode()[:-1] + b', "temperature": ' + number + b"}"
    if name == "top-p-over-one":
        return path, headers, json.dumps({**data, "top_p": 1.5}).encode()
    if name == "seed-negative":
        return path, headers, json.dumps({**data, "seed": -1}).encode()
    raise ValueError(f"unknown bad input {name!r}")


def hostile_client(s: Send, base_url: str, key: str, model: str, caps: tuple[int, int],
                   budget_s: float) -> Outcome:
    """Run the hostile client `s.bad` names (plan.HOSTILE_INPUTS)."""
    if s.bad == "wait-flood":
        return hostile.wait_flood(s, base_url, key, model, caps[0])
    if s.bad == "get-flood":
        return hostile.get_flood(s, base_url, key, caps[1])
    if s.bad in ("hangup-mid-wait", "hangup-mid-stream"):
        return hostile.hang_up(s, base_url, key, model, stream=s.bad == "hangup-mid-stream")
    if s.bad == "retry-after-5xx":
        return hostile.retry_after_5xx(s, base_url, key, model, budget_s)
    raise ValueError(f"unknown hostile client {s.bad!r}")


def post(base_url: str, req: Request, timeout_s: float = 10
         ) -> tuple[int | None, dict[str, Any], float | None]:
    """One POST: (status or None when unanswered, JSON body, Retry-After seconds)."""
    path, headers, body = req
    r = urllib.request.Request(base_url.rstrip("/") + path, data=body, method="POST",
                               headers=headers)
    try:
        with urllib.request.urlopen(r, timeout=timeout_s) as resp:
            return resp.status, json.loads(resp.read() or b"{}"), None
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            problem = json.loads(raw)
        except ValueError:
            problem = {"detail": raw[:200].decode(errors="replace")}
        retry = e.headers.get("Retry-After")
        return e.code, problem if isinstance(problem, dict) else {}, (
            float(retry) if retry and retry.isdigit() else None)
    except (OSError, ValueError) as e:  # refused, reset, timed out: no answer
        return None, {"detail": type(e).__name__}, None


def send_until_answered(base_url: str, req: Request, budget_s: float
                        ) -> tuple[int | None, dict[str, Any], int]:
    """POST the same request again after no answer or a 5xx, until answered or `budget_s`;
    returns the last answer and how many before it were none or 5xx."""
    deadline = time.monotonic() + budget_s
    pause = 0.1
    retried = 0
    while True:
        status, body, retry = post(base_url, req, timeout_s=max(1.0, min(10.0, budget_s)))
        if status is not None and status < 500:
            return status, body, retried
        if time.monotonic() + pause > deadline:
            return status, body, retried
        retried += 1
        time.sleep(min(retry or pause, 1.0))
        pause = min(pause * 2, 1.0)


class Loader:
    """Sends planned events from `concurrency` threads, paced over `duration_s`, and keeps
    every outcome (`outcomes`, thread-safe) for the checks."""

    def __init__(self, base_url: str, keys: dict[str, str], model: str,
                 budget_s: float = 30, caps: tuple[int, int] = (8, 100)) -> None:
        self.base_url = base_url
        self.caps = caps  # the door's waits and reads a second per key, all processes
        self.keys = keys
        self.model = model
        self.budget_s = budget_s
        self.deadline = float("inf")  # monotonic; later sends are recorded unanswered, unsent
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()

    def record(self, outcome: Outcome) -> None:
        """Keep one outcome."""
        with self._lock:
            self.outcomes.append(outcome)

    def accepted(self) -> set[str]:
        """Request ids answered 202 so far."""
        with self._lock:
            return {o.request_id for o in self.outcomes if o.status == 202 and o.request_id}

    def send(self, s: Send) -> Outcome:
        """Send one planned event (both copies at once for a twin) and record the outcome."""
        if s.twin:
            other = threading.Thread(target=self._send_one, args=(s,), daemon=True)
            other.start()
            out = self._send_one(s)
            other.join()
            return out
        return self._send_one(s)

    def _send_one(self, s: Send) -> Outcome:
        if s.kind == "hostile":
            out = hostile_client(s, self.base_url, self.keys[s.tenant], self.model, self.caps,
                                 self.budget_s)
            self.record(out)
            return out
        key = self.keys[s.key or s.tenant]
        req = (bad_request(s.bad, key, s, self.model) if s.kind == "bad"
               else event_request(key, s.source, s.ce_id, s.data))
        budget = min(self.budget_s, self.deadline - time.monotonic())
        if budget <= 0:
            out = Outcome(s.index, s.kind, None, None, "not sent: the load's time ran out",
                          s.original, s.bad)
            self.record(out)
            return out
        status, body, retried = send_until_answered(self.base_url, req, budget)
        out = Outcome(s.index, s.kind, status, body.get("request_id"),
                      str(body.get("detail", ""))[:160], s.original, s.bad, retried)
        self.record(out)
        return out

    def run(self, plan: list[Send], concurrency: int, duration_s: float,
            progress: Callable[[str], None]) -> None:
        """Send the plan; send i waits until i/len(plan) of `duration_s` has passed. Sends
        past `deadline` are not made (an interrupt sets it to now)."""
        started = time.monotonic()
        spacing = duration_s / max(1, len(plan))
        step = max(1, len(plan) // 10)

        def one(s: Send) -> None:
            due = started + s.index * spacing
            while time.monotonic() < min(due, self.deadline):
                time.sleep(max(0.0, min(0.2, due - time.monotonic())))
            self.send(s)
            if (s.index + 1) % step == 0:
                progress(f"sent {s.index + 1}/{len(plan)} ({len(self.accepted())} accepted)")

        with ThreadPoolExecutor(concurrency, thread_name_prefix="chaos-load") as pool:
            try:
                list(pool.map(one, plan))
            except BaseException:
                self.deadline = 0.0
                raise
