"""The OpenAI door over in-memory ports with the real handlers behind it (no services): answers
in OpenAI's shapes with usage equal to the ledger's charge, streams the deltas in order with
the usage chunk and [DONE], cancels on a hang-up (charged exactly what was generated), answers
each error with OpenAI's status, type and code, and the CloudEvents door's event stream."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import psycopg
import pytest
import redis

from quotaflow.events.catalog import REQUESTED_TYPE
from quotaflow.runtime.asgi_bridge import DISCONNECTED
from quotaflow.runtime.door.app import create_app
from tests.openai.memory_pipeline import MODEL, MemoryDoor

WORDS = "one two three"  # the stand-in answers "three two one": 3 tokens; the prompt is 4


@pytest.fixture
def door() -> Iterator[MemoryDoor]:
    d = MemoryDoor()
    yield d
    d.pipeline.close()


def chat(door: MemoryDoor, tenant: str = "acme", headers: dict[str, str] | None = None,
         path: str = "/v1/chat/completions", **over: Any) -> Any:
    body = {"model": MODEL, "messages": [{"role": "user", "content": WORDS}], "max_tokens": 8,
            **over}
    if path == "/v1/completions":
        body["prompt"] = body.pop("messages")[0]["content"]
    return door.client.post(path, headers=door.headers(tenant, **(headers or {})), json=body)


def events(resp: Any) -> list[Any]:
    """The `data:` payloads of an SSE body, JSON-decoded ("[DONE]" kept as is)."""
    out = []
    for line in resp.get_data(as_text=True).splitlines():
        if line.startswith("data: "):
            raw = line[6:]
            out.append(raw if raw == "[DONE]" else json.loads(raw))
    return out


def error(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.get_data(as_text=True)
    body: dict[str, Any] = resp.get_json()["error"]
    assert set(body) == {"message", "type", "param", "code"}
    return body


def test_a_chat_completion_answers_with_the_ledgers_charge_as_usage(door: MemoryDoor) -> None:
    resp = chat(door)
    assert resp.status_code == 200
    rid = resp.headers["x-request-id"]
    got = resp.get_json()
    assert (got["id"], got["object"], got["model"]) == (f"chatcmpl-{rid}", "chat.completion",
                                                         MODEL)
    assert got["choices"][0]["message"] == {"role": "assistant", "content": "three two one",
                                            "refusal": None}
    assert got["choices"][0]["finish_reason"] == "stop"
    assert got["usage"] == {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}
    assert door.spent() == 7 and door.reserved() == 0
    view = door.client.get(f"/v1/requests/{rid}", headers=door.headers()).get_json()
    assert (view["status"], view["usage"]["charged_tokens"]) == ("completed", 7)


def test_a_completion_cut_at_max_tokens_finishes_with_length(door: MemoryDoor) -> None:
    got = chat(door, path="/v1/completions", max_tokens=2).get_json()
    assert got["object"] == "text_completion"
    assert (got["choices"][0]["text"], got["choices"][0]["finish_reason"]) == ("three two",
                                                                              "length")
    assert got["usage"]["total_tokens"] == door.spent() == 4 + 2


def test_a_stream_relays_every_delta_in_order_then_usage_then_done(door: MemoryDoor) -> None:
    resp = chat(door, stream=True, stream_options={"include_usage": True})
    assert resp.status_code == 200 and resp.mimetype == "text/event-stream"
    chunks = events(resp)
    assert chunks[-1] == "[DONE]"
    *deltas, finish, usage = chunks[:-1]
    assert deltas[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in deltas) == \
        "three two one"
    assert [c["choices"][0]["delta"]["content"] for c in deltas[1:]] == ["three", " two", " one"]
    assert all(c["usage"] is None and c["object"] == "chat.completion.chunk"
               for c in [*deltas, finish])
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert usage["choices"] == [] and usage["usage"] == {
        "prompt_tokens": 4, "completion_tokens": 3, "total_tokens": door.spent()}


def test_a_stream_without_usage_asked_has_no_usage_field(door: MemoryDoor) -> None:
    chunks = events(chat(door, path="/v1/completions", stream=True))
    assert chunks[-1] == "[DONE]"
    assert all("usage" not in c and c["object"] == "text_completion" for c in chunks[:-1])
    assert "".join(c["choices"][0]["text"] for c in chunks[:-1]) == "three two one"


def test_streamed_text_equals_the_text_of_the_same_request_not_streamed(
        door: MemoryDoor) -> None:
    whole = chat(door, max_tokens=5).get_json()["choices"][0]["message"]["content"]
    streamed = "".join(c["choices"][0]["delta"].get("content", "")
                       for c in events(chat(door, max_tokens=5, stream=True))[:-2])
    assert streamed == whole


def test_hanging_up_mid_stream_cancels_and_charges_exactly_what_was_generated() -> None:
    door = MemoryDoor(token_delay_s=0.02)
    try:
        prompt = " ".join(f"w{i}" for i in range(60))  # 61 prompt tokens, 60 to generate
        resp = door.client.post("/v1/chat/completions", headers=door.headers(), json={
            "model": MODEL, "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 60, "stream": True}, buffered=False)
        rid = resp.headers["x-request-id"]
        body = iter(resp.response)
        seen = [next(body) for _ in range(4)]  # the role chunk and three deltas
        assert all(part.startswith(b"data: ") for part in seen)
        resp.close()  # the client hangs up
        assert door.stream.cancelled([rid]) == {rid}
        view = _ended(door, rid)
        assert 3 <= (view.completion_tokens or 0) < 60
        assert view.charged_tokens == 61 + (view.completion_tokens or 0) == door.spent()
        assert door.reserved() == 0
    finally:
        door.pipeline.close()


def test_a_client_gone_while_a_call_that_does_not_stream_waits_cancels_it() -> None:
    # The Knative entry sets this event when the client disconnects (asgi_bridge).
    door = MemoryDoor(token_delay_s=0.02)
    gone = threading.Event()
    gone.set()
    try:
        prompt = " ".join(f"w{i}" for i in range(60))
        resp = door.client.post("/v1/chat/completions", headers=door.headers(), json={
            "model": MODEL, "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 60}, environ_overrides={DISCONNECTED: gone})
        assert resp.status_code == 499
        rid = resp.headers["x-request-id"]
        assert door.stream.cancelled([rid]) == {rid}
        view = _ended(door, rid)
        assert (view.completion_tokens or 0) < 60
        assert view.charged_tokens == 61 + (view.completion_tokens or 0) == door.spent()
    finally:
        door.pipeline.close()


def _ended(door: MemoryDoor, rid: str) -> Any:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        view = door.requests.fetch("acme", rid)
        if view is not None and view.status == "completed":
            return view
        time.sleep(0.01)
    raise AssertionError(f"{rid} did not end")


def test_a_finished_stream_is_not_cancelled(door: MemoryDoor) -> None:
    resp = chat(door, stream=True)
    events(resp)
    resp.close()
    assert door.stream.cancelled([resp.headers["x-request-id"]]) == set()


def test_the_same_idempotency_key_is_the_same_request_charged_once(door: MemoryDoor) -> None:
    first = chat(door, headers={"Idempotency-Key": "k-1"})
    again = chat(door, headers={"Idempotency-Key": "k-1"})
    assert first.headers["x-request-id"] == again.headers["x-request-id"]
    assert first.get_json()["usage"] == again.get_json()["usage"]
    assert door.spent() == 7
    e = error(chat(door, headers={"Idempotency-Key": "k-1"}, max_tokens=9), 409)
    assert e["code"] == "idempotency_conflict"


def test_a_bad_key_is_401_invalid_api_key(door: MemoryDoor) -> None:
    resp = door.client.post("/v1/chat/completions", json={},
                            headers={"Authorization": "Bearer qf_nope"})
    assert error(resp, 401)["code"] == "invalid_api_key"
    assert error(door.client.get("/v1/models"), 401)["type"] == "invalid_request_error"


def test_rate_limit_and_quota_are_429s_told_apart_with_retry_after() -> None:
    door = MemoryDoor(rate_limit=1)
    try:
        assert chat(door).status_code == 200
        limited = chat(door)
        e = error(limited, 429)
        assert (e["type"], e["code"]) == ("requests", "rate_limit_exceeded")
        assert int(limited.headers["Retry-After"]) >= 1
        poor = chat(door, "tiny", max_tokens=20)  # the pre-check: 10 tokens left
        e = error(poor, 429)
        assert (e["type"], e["code"]) == ("insufficient_quota", "insufficient_quota")
        assert int(poor.headers["Retry-After"]) >= 1
    finally:
        door.pipeline.close()


def test_a_ledger_refusal_retries_after_the_tenants_own_month_ends_in_its_zone(
        door: MemoryDoor) -> None:
    door.keys["tokyo"] = door.world.tenant("tokyo", 10, time_zone="Asia/Tokyo")
    resp = door.client.post("/v1/chat/completions", headers=door.headers("tokyo"), json={
        "model": MODEL, "messages": [{"role": "user", "content": "a b c d e f"}],
        "max_tokens": 5})
    assert error(resp, 429)["code"] == "insufficient_quota"
    # 21:00:45 in Tokyo; its December begins at 2026-11-30 15:00 UTC, nine hours before UTC's
    assert resp.headers["Retry-After"] == str(27 * 3600 - 45)


@pytest.mark.parametrize("stream", [False, True])
def test_a_request_the_ledger_rejects_is_429_insufficient_quota(door: MemoryDoor,
                                                              stream: bool) -> None:
    # The pre-check passes (6 <= 10) but prompt 7 + max_tokens 5 exceeds the grant of 10.
    resp = door.client.post("/v1/chat/completions", headers=door.headers("tiny"), json={
        "model": MODEL, "messages": [{"role": "user", "content": "a b c d e f"}],
        "max_tokens": 5, "stream": stream})
    e = error(resp, 429)
    assert (e["type"], e["code"]) == ("insufficient_quota", "insufficient_quota")
    assert int(resp.headers["Retry-After"]) >= 1
    view = door.requests.fetch("tiny", resp.headers["x-request-id"])
    assert view is not None and view.status == "rejected" and door.spent("tiny") == 0


def test_bad_input_is_400_naming_the_field_and_a_bad_model_404(door: MemoryDoor) -> None:
    assert error(chat(door, temperature=9), 400)["param"] == "temperature"
    assert error(chat(door, model="gpt-4o"), 404)["code"] == "model_not_found"
    bad_json = door.client.post("/v1/chat/completions", data=b"{", headers=door.headers())
    assert error(bad_json, 400)["type"] == "invalid_request_error"
    assert error(chat(door, headers={"Idempotency-Key": "a\x7fb"}), 400)


def test_models_lists_the_served_model(door: MemoryDoor) -> None:
    got = door.client.get("/v1/models", headers=door.headers()).get_json()
    assert got["object"] == "list" and [m["id"] for m in got["data"]] == [MODEL]
    one = door.client.get(f"/v1/models/{MODEL}", headers=door.headers())
    assert one.get_json()["object"] == "model"
    assert error(door.client.get("/v1/models/other", headers=door.headers()), 404)


def post_event(door: MemoryDoor, **data: Any) -> str:
    resp = door.client.post("/", headers=door.headers(**{
        "ce-specversion": "1.0", "ce-id": "e-1", "ce-source": "/t", "ce-type": REQUESTED_TYPE,
        "Content-Type": "application/json"}), json={"model": MODEL, "prompt": WORDS,
                                                   "max_tokens": 8, **data})
    assert resp.status_code == 202, resp.get_data(as_text=True)
    return str(resp.get_json()["request_id"])


def sse_events(resp: Any) -> list[tuple[str | None, str, Any]]:
    """(id, event, data) of each SSE event."""
    out = []
    for block in resp.get_data(as_text=True).split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line
                      and not line.startswith(":"))
        if "data" in fields:
            out.append((fields.get("id"), fields["event"], json.loads(fields["data"])))
    return out


def test_the_cloudevents_door_streams_deltas_and_resumes_after_last_event_id(
        door: MemoryDoor) -> None:
    rid = post_event(door, stream=True)
    got = sse_events(door.client.get(f"/v1/requests/{rid}/events", headers=door.headers()))
    assert [(i, e, d.get("text")) for i, e, d in got[:-1]] == [
        ("0-1", "delta", "three"), ("0-2", "delta", " two"), ("0-3", "delta", " one")]
    assert got[-1][1:] == ("end", {"status": "completed", "finish_reason": "stop",
                                   "usage": {"prompt_tokens": 4, "completion_tokens": 3}})
    resumed = sse_events(door.client.get(f"/v1/requests/{rid}/events",
                                         headers=door.headers(**{"Last-Event-ID": "0-2"})))
    assert [d.get("text") for _, e, d in resumed if e == "delta"] == [" one"]
    assert door.client.get(f"/v1/requests/{rid}/events",
                           headers=door.headers("tiny")).status_code == 404
    bad = door.client.get(f"/v1/requests/{rid}/events",
                          headers=door.headers(**{"Last-Event-ID": "x"}))
    assert bad.status_code == 400 and bad.mimetype == "application/problem+json"


def test_a_request_not_streamed_gives_its_recorded_output_then_end(door: MemoryDoor) -> None:
    rid = post_event(door)
    got = sse_events(door.client.get(f"/v1/requests/{rid}/events", headers=door.headers()))
    assert [d.get("text") for _, e, d in got if e == "delta"] == ["three two one"]
    assert got[-1][2]["status"] == "completed" and got[-1][2]["usage"]["charged_tokens"] == 7


@pytest.mark.parametrize("outage", [
    psycopg.OperationalError("the database system is shutting down"),
    redis.ConnectionError("Connection refused"), BufferError("Local: Queue full"),
], ids=lambda e: type(e).__name__)
def test_a_backing_service_that_is_down_is_503_with_retry_after(
        door: MemoryDoor, outage: Exception, caplog: pytest.LogCaptureFixture) -> None:
    class Down:
        def publish(self, envelopes: Any) -> None:
            raise outage

    client = create_app(door.settings, replace(door.ports, publisher=Down())).test_client()
    resp = client.post("/v1/chat/completions", headers=door.headers(), json={
        "model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
    e = error(resp, 503)
    assert e["code"] == "service_unavailable" and resp.headers["Retry-After"] == "5"
    assert [r for r in caplog.records if r.exc_info] == []


def test_a_key_whose_projected_tokens_cannot_cover_a_request_is_refused_at_the_door(
        door: MemoryDoor) -> None:
    key_id = door.keys["acme"].split("_")[1]
    door.ledger.add_key("acme", key_id, tokens=60)
    held = door.world.tenants._keys[key_id]  # what `authenticate` reads from api_keys
    held.principal = replace(held.principal, key_limit_tokens=60)
    assert chat(door).status_code == 200  # charged 4 + 3: 53 of the key's 60 left
    published = len(door.pipeline.published)
    resp = chat(door, max_tokens=60)  # the pre-check's 61: refused before it is published
    e = error(resp, 429)
    assert (e["type"], e["code"]) == ("insufficient_quota", "insufficient_quota")
    assert e["message"] == (f"key '{key_id}' of tenant 'acme' has 53 of 60 tokens left this "
                            "period; this request may need 61")
    assert int(resp.headers["Retry-After"]) >= 1
    assert len(door.pipeline.published) == published
    assert chat(door, max_tokens=49).status_code == 200  # 4 + 49: the 53 left cover it


def test_a_team_out_of_money_is_429_insufficient_quota_naming_the_team(
        door: MemoryDoor) -> None:
    key_id = door.keys["acme"].split("_")[1]
    door.ledger.add_team("acme", "ml", usd=1)  # one micro-dollar a period
    door.ledger.add_key("acme", key_id, "ml")
    door.ledger.set_price(MODEL, 1_000_000, 1_000_000)  # a micro-dollar a token
    e = error(chat(door, max_tokens=5), 429)
    assert (e["type"], e["code"]) == ("insufficient_quota", "insufficient_quota")
    assert e["message"].startswith("team 'ml' of tenant 'acme' has $0.000001 of $0.000001 "
                                   "left this period")
