"""Rule 8 of issue 26: retries never bill one answer twice. The official `openai` client sends
no Idempotency-Key and retries a 5xx twice, each retry a new request: a stored request the door
answered 5xx is voided (never billed, even when it is delivered late), one the ledger charged
before the door failed is answered instead of the 5xx, and the door's longest wait stays under
the SDK's own time-out."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import openai

from quotaflow.events.payloads import Admitted, Reserved
from quotaflow.events.status import RequestStatus
from quotaflow.runtime.door.app import create_app
from quotaflow.runtime.door.void import is_voided
from quotaflow.runtime.timeouts import DOOR_LONGEST_WAIT_S, door_wait_s
from tests.hostile.sdk_door import FailingReads, Held, finish, reserve_now, sdk
from tests.openai.memory_pipeline import PERIOD, MemoryDoor

ASK: Any = [{"role": "user", "content": "what is the capital of France"}]


def test_rule8_a_503_after_the_request_was_stored_is_voided_and_its_late_delivery_is_free(
        door: MemoryDoor) -> None:
    held = Held(door, fail=True)
    client, retries = sdk(door, publisher=held)
    got = client.chat.completions.create(model="standin", max_tokens=20, messages=ASK)
    assert retries == [0]  # the SDK's own retry of the 503
    held.deliver()  # the first try's event, delivered after all
    assert got.usage is not None
    assert door.spent() == got.usage.total_tokens > 0  # one answer, billed once
    assert door.reserved() == 0
    late = held.held[0].payload
    assert isinstance(late, Admitted)
    first = door.requests.fetch("acme", late.request_id)
    assert first is not None
    assert first.status == RequestStatus.REJECTED and first.charged_tokens == 0
    assert first.reason is not None and "voided" in first.reason


def test_rule8_a_503_while_reserved_releases_it_and_the_late_completion_is_charged_nothing(
        door: MemoryDoor) -> None:
    reserved: list[Reserved] = []

    class ReserveFirst(Held):
        def publish(self, envelopes):  # type: ignore[no-untyped-def]
            if not reserved:
                reserved.extend(reserve_now(door, envelopes))  # the request is reserved
                return
            door.pipeline.publish(envelopes)

    client, retries = sdk(door, publisher=ReserveFirst(door, fail=False),
                          requests=FailingReads(door.requests))
    got = client.chat.completions.create(model="standin", max_tokens=20, messages=ASK)
    assert retries == [0]
    finish(door, reserved)  # infer runs the voided request after all: settle charges nothing
    door.pipeline.close()
    assert got.usage is not None
    assert door.spent() == got.usage.total_tokens
    assert door.reserved() == 0
    first = door.requests.fetch("acme", reserved[0].request_id)
    assert first is not None
    assert first.status == RequestStatus.FAILED and first.charged_tokens == 0


def test_rule8_a_request_charged_before_the_door_failed_is_answered_not_retried(
        door: MemoryDoor) -> None:
    class AllAtOnce(Held):
        def publish(self, envelopes):  # type: ignore[no-untyped-def]
            finish(door, reserve_now(door, envelopes))  # ended and charged before the 503

    client, retries = sdk(door, publisher=AllAtOnce(door, fail=False),
                          requests=FailingReads(door.requests))
    got = client.chat.completions.create(model="standin", max_tokens=20, messages=ASK)
    assert retries == []  # answered 200: nothing for the SDK to retry
    assert got.usage is not None
    assert door.spent() == got.usage.total_tokens > 0
    assert door.ledger.balance("acme", PERIOD).reserved == 0


def test_rule8_a_503_with_an_idempotency_key_is_voided_and_the_sdks_retry_is_billed_once(
        door: MemoryDoor) -> None:
    held = Held(door, fail=True)
    client, retries = sdk(door, publisher=held)
    got = client.chat.completions.with_raw_response.create(
        model="standin", max_tokens=20, messages=ASK, extra_headers={"Idempotency-Key": "k-1"})
    assert retries == [0]  # the SDK's own retry of the 503, with the same key
    held.deliver()  # the first try's event, delivered after all
    answer = got.parse()
    assert answer.usage is not None
    assert door.spent() == answer.usage.total_tokens > 0  # one answer, billed once
    late = held.held[0].payload
    assert isinstance(late, Admitted)
    assert got.headers["x-request-id"] != late.request_id  # a fresh attempt, not a replay
    first = door.requests.fetch("acme", late.request_id)
    assert first is not None and first.charged_tokens == 0
    assert first.status == RequestStatus.REJECTED and is_voided(first.reason)


def test_rule8_a_raw_retry_after_a_5xx_is_a_fresh_attempt_and_then_the_same_request(
        door: MemoryDoor) -> None:
    held = Held(door, fail=True)
    failing = create_app(door.settings, replace(door.ports, publisher=held)).test_client()
    ask = {"model": "standin", "max_tokens": 20, "messages": ASK}
    headers = door.headers(**{"Idempotency-Key": "k-raw"})
    refused = failing.post("/v1/chat/completions", headers=headers, json=ask)
    assert refused.status_code == 503
    voided = held.held[0].payload
    assert isinstance(voided, Admitted)
    voided_id = voided.request_id
    again = door.client.post("/v1/chat/completions", headers=headers, json=ask)
    assert again.status_code == 200 and again.headers["x-request-id"] != voided_id
    replay = door.client.post("/v1/chat/completions", headers=headers, json=ask)
    assert replay.headers["x-request-id"] == again.headers["x-request-id"]  # the same request
    assert replay.get_json()["choices"] == again.get_json()["choices"]
    held.deliver()
    assert door.spent() == again.get_json()["usage"]["total_tokens"] > 0  # billed once
    assert door.reserved() == 0


def test_rule8_the_door_answers_before_the_sdks_default_time_out(door: MemoryDoor) -> None:
    sdk_read_s = openai.DEFAULT_TIMEOUT.read
    assert sdk_read_s is not None
    assert door_wait_s(door.settings) <= DOOR_LONGEST_WAIT_S < sdk_read_s
