"""A key's tokens per minute and requests in flight, through the OpenAI door over in-memory
ports with the real handlers behind it: over either, the client gets 429 `rate_limit_exceeded`
with a Retry-After; the rolling minute refills as the clock moves and holds what reserve
reserved, not the door's bound; an in-flight slot is freed when its request completes, is
cancelled by a hang-up, is voided, or ends rejected or failed."""

from __future__ import annotations

import threading
from typing import Any

from quotaflow.events.payloads import Rejected
from quotaflow.functions.record.handler import handle as record
from quotaflow.ports import ScreenQuery
from quotaflow.runtime.door.limits import tokens_bound
from quotaflow.runtime.door.void import Voider
from tests.openai.memory_pipeline import MODEL, MemoryDoor

WORDS = "one two three"  # the stand-in: 4 prompt tokens


def door_with_key(**limits: int) -> tuple[MemoryDoor, dict[str, str]]:
    door = MemoryDoor()
    key = door.world.tenants.create_key("acme", 1000, "month", **limits)
    return door, {"Authorization": f"Bearer {key}"}


def chat(door: MemoryDoor, headers: dict[str, str], max_tokens: int = 8,
         content: str = WORDS, **over: Any) -> Any:
    return door.client.post("/v1/chat/completions", headers=headers, json={
        "model": MODEL, "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens, **over})


def rate_limited(resp: Any) -> int:
    """The Retry-After of a 429 rate_limit_exceeded (fails on any other answer)."""
    assert resp.status_code == 429, resp.get_data(as_text=True)
    e = resp.get_json()["error"]
    assert (e["type"], e["code"]) == ("requests", "rate_limit_exceeded")
    return int(resp.headers["Retry-After"])


def test_the_door_bound_covers_prompt_and_max_tokens() -> None:
    data = {"messages": [{"role": "user", "content": WORDS}], "max_tokens": 8}
    assert tokens_bound(data) >= 4 + 8


def test_over_the_keys_tokens_per_minute_is_429_until_the_minute_frees_it() -> None:
    # One request holds its bound (13 bytes + 16 + 64 + 8 = 101) at the door and, once
    # reserved, 4 + 8 = 12: two fit in 120 a minute, a third does not.
    door, headers = door_with_key(tpm=120)
    try:
        assert chat(door, headers).status_code == 200
        assert chat(door, headers).status_code == 200
        assert rate_limited(chat(door, headers)) == 60  # all held at the same instant
        door.clock.advance(59)
        assert rate_limited(chat(door, headers)) == 1
        door.clock.advance(1)
        assert chat(door, headers).status_code == 200
        assert door.spent() == 3 * 7  # three answered, each charged 4 + 3
    finally:
        door.pipeline.close()


def test_a_request_larger_than_the_tokens_per_minute_is_429_without_retry_after() -> None:
    door, headers = door_with_key(tpm=50)
    try:
        resp = chat(door, headers)
        assert resp.status_code == 429 and "Retry-After" not in resp.headers
        assert "50 tokens a minute" in resp.get_json()["error"]["message"]
    finally:
        door.pipeline.close()


def test_over_the_keys_requests_in_flight_is_429_and_a_completion_frees_the_slot() -> None:
    door, headers = door_with_key(max_inflight=1)
    try:
        door.pipeline.paused.clear()  # the first request stays in flight
        first: list[Any] = []
        waiting = threading.Thread(target=lambda: first.append(chat(door, headers)))
        waiting.start()
        _until(lambda: len(door.pipeline.published) == 1)
        assert rate_limited(chat(door, headers)) >= 1
        door.pipeline.paused.set()
        waiting.join(10)
        assert first[0].status_code == 200
        assert chat(door, headers).status_code == 200
    finally:
        door.pipeline.close()


def test_a_request_cancelled_by_a_hang_up_frees_its_slot() -> None:
    door, headers = door_with_key(max_inflight=1)
    try:
        prompt = " ".join(f"w{i}" for i in range(60))
        resp = chat(door, headers, max_tokens=60, content=prompt, stream=True)
        resp.close()  # hangs up at once
        _until(lambda: _status(door, resp.headers["x-request-id"]) == "completed")
        assert chat(door, headers).status_code == 200
    finally:
        door.pipeline.close()


def test_a_voided_request_frees_its_slot() -> None:
    door, headers = door_with_key(max_inflight=1)
    try:
        door.pipeline.paused.clear()
        threading.Thread(target=lambda: chat(door, headers), daemon=True).start()
        _until(lambda: len(door.pipeline.published) == 1)
        rid = door.pipeline.published[0].payload.request_id
        Voider(door.ledger, door.requests, door.stream, door.world.gate).void("acme", rid, "5xx")
        assert _status(door, rid) == "rejected"
        door.pipeline.paused.set()
        assert chat(door, headers).status_code == 200
    finally:
        door.pipeline.close()


def test_record_frees_the_slot_of_a_rejected_or_failed_request() -> None:
    door, _ = door_with_key()
    gate = door.world.gate
    query = ScreenQuery("r1", "h", "k1", 0, "acme", "2026-11", 100, 1, max_inflight=1)
    assert gate.screen(query).over is None
    assert gate.screen(ScreenQuery("r2", "h", "k1", 0, "acme", "2026-11", 100, 1,
                                   max_inflight=1)).over is not None
    record([Rejected("r1", "acme", 10, "quota_exceeded")], door.world.ports("record"))
    assert gate.screen(ScreenQuery("r2", "h", "k1", 0, "acme", "2026-11", 100, 1,
                                   max_inflight=1)).over is None
    door.pipeline.close()


def _status(door: MemoryDoor, rid: str) -> str | None:
    view = door.requests.fetch("acme", rid)
    return None if view is None else str(view.status)


def _until(ready: Any, timeout_s: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while not ready():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
