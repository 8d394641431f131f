"""Rule 7 of issue 26, fair share: one key cannot hold all of admit's threads or flood it with
calls the rate limit does not see. Each key may hold `waits_per_key` answers open at once (a
non-streamed OpenAI call waiting, a streamed one, `GET /v1/requests/{id}/events`); past it a 429
with Retry-After (OpenAI's `rate_limit_exceeded` on its routes), while other keys are served.
GETs, resends and 409s are counted per key, `reads_per_s_per_key` a second."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from quotaflow.runtime.door.fair_share import FairShare
from quotaflow.settings import Settings, SettingsError
from tests.openai.memory_pipeline import MODEL, MemoryDoor
from tests.problems import assert_problem
from tests.unit.test_openai_door import post_event

CHAT: dict[str, Any] = {"model": MODEL, "max_tokens": 5,
                        "messages": [{"role": "user", "content": "one two three"}]}


def share(door: MemoryDoor) -> FairShare:
    found = door.client.application.extensions["quotaflow"]["share"]
    assert isinstance(found, FairShare)
    return found


def held(door: MemoryDoor) -> int:
    s = share(door)
    with s.lock:
        return sum(s.holding.values())


def wait_for(check: Any) -> None:
    """Until `check()` holds (what other threads do), bounded."""
    done = threading.Event()
    for _ in range(5000):
        if check():
            return
        done.wait(0.002)
    raise AssertionError("never happened")


def assert_openai_rate_limited(resp: Any) -> None:
    assert resp.status_code == 429, resp.get_data(as_text=True)
    assert resp.headers["Retry-After"] == "1"
    error = resp.get_json()["error"]
    assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")


def test_rule7_a_key_holding_its_waits_gets_429_and_another_key_is_served(
        door: MemoryDoor) -> None:
    cap = door.settings.waits_per_key
    door.pipeline.paused.clear()  # every call waits for its answer
    other = door.world.tenant("other", 100_000)
    answers: list[int] = []

    def call(key: str) -> None:
        resp = door.client.post("/v1/chat/completions", json=CHAT,
                                headers={"Authorization": f"Bearer {key}"})
        answers.append(resp.status_code)

    mine = [threading.Thread(target=call, args=(door.keys["acme"],)) for _ in range(cap)]
    for t in mine:
        t.start()
    wait_for(lambda: held(door) == cap)
    refused = door.client.post("/v1/chat/completions", json=CHAT, headers=door.headers())
    assert_openai_rate_limited(refused)
    assert door.ledger.balance("acme", "2026-11").reserved == 0  # nothing stored for it
    theirs = threading.Thread(target=call, args=(other,))
    theirs.start()
    wait_for(lambda: held(door) == cap + 1)  # the other key got a wait of its own
    door.pipeline.paused.set()
    for t in [*mine, theirs]:
        t.join(30)
    assert answers == [200] * (cap + 1)
    assert held(door) == 0


def test_rule7_streams_and_event_streams_hold_a_wait_until_they_close(
        door: MemoryDoor) -> None:
    cap = door.settings.waits_per_key
    rid = post_event(door)
    streams = [door.client.get(f"/v1/requests/{rid}/events", headers=door.headers(),
                               buffered=False) for _ in range(cap - 1)]
    chat = door.client.post("/v1/chat/completions", json={**CHAT, "stream": True},
                            headers=door.headers(), buffered=False)
    assert chat.status_code == 200
    assert held(door) == cap
    assert_problem(door.client.get(f"/v1/requests/{rid}/events", headers=door.headers()),
                   429, "answers open")
    assert_openai_rate_limited(door.client.post("/v1/chat/completions", json=CHAT,
                                                headers=door.headers()))
    chat.get_data()
    chat.close()
    for s in streams:
        s.close()
    assert held(door) == 0
    for _ in range(2 * cap):  # each call gives its wait back
        assert door.client.post("/v1/chat/completions", json=CHAT,
                                headers=door.headers()).status_code == 200
    assert held(door) == 0


def test_rule7_gets_are_rate_limited_per_key(door: MemoryDoor) -> None:
    s = share(door)
    s.monotonic = lambda: 100.0  # one window for the whole test
    for _ in range(s.reads_per_s_per_key):
        assert door.client.get("/v1/quota", headers=door.headers()).status_code == 200
    resp = door.client.get("/v1/quota", headers=door.headers())
    assert_problem(resp, 429, "reads, resends and reused ids a second")
    assert resp.headers["Retry-After"] == "1"
    assert_openai_rate_limited(door.client.get("/v1/models", headers=door.headers()))
    assert door.client.get("/v1/quota", headers=door.headers("tiny")).status_code == 200
    s.monotonic = lambda: 101.0  # the next second
    assert door.client.get("/v1/quota", headers=door.headers()).status_code == 200


def test_rule7_resends_and_409s_count_against_the_key(door: MemoryDoor) -> None:
    s = share(door)
    s.monotonic = lambda: 100.0
    post_event(door)  # a new request: the per-minute rate limit counts it, not this one
    with s.lock:
        assert s.counts == {}
    post_event(door)  # a resend: counted
    resp = door.client.post("/", headers=door.headers(**{
        "ce-specversion": "1.0", "ce-id": "e-1", "ce-source": "/t",
        "ce-type": "dev.quotaflow.inference.requested", "Content-Type": "application/json"}),
        json={"model": MODEL, "prompt": "another prompt", "max_tokens": 8})
    assert resp.status_code == 409  # the same id, another payload: counted
    with s.lock:
        assert sum(s.counts.values()) == 2
    for _ in range(s.reads_per_s_per_key - 2):
        post_event(door)
    resp = door.client.post("/", headers=door.headers(**{
        "ce-specversion": "1.0", "ce-id": "e-1", "ce-source": "/t",
        "ce-type": "dev.quotaflow.inference.requested", "Content-Type": "application/json"}),
        json={"model": MODEL, "prompt": "another prompt", "max_tokens": 8})
    assert_problem(resp, 429, "reused id")


@pytest.mark.parametrize("name", ["QF_WAITS_PER_KEY", "QF_READS_PER_S_PER_KEY"])
def test_rule7_the_fair_share_settings_are_read_loudly(name: str) -> None:
    assert getattr(Settings.from_env({name: "7"}), name.removeprefix("QF_").lower()) == 7
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: "0"})
