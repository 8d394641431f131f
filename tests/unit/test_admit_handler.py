"""admit's use case on in-memory ports: the request id, idempotent resends, conflicts, and the
`admitted` payloads it hands back for the door to publish."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from quotaflow.adapters.clock import FixedClock
from quotaflow.adapters.memory.requests import MemoryRequestStore
from quotaflow.events.payloads import Message
from quotaflow.functions.admit.handler import (
    AdmitPorts,
    IdempotencyConflict,
    Screened,
    admit,
    request_id_for,
)
from quotaflow.ports import NewRequest, Principal, ReservedMark

ACME = Principal("acme", "key-1", 600, "month")


@dataclass(frozen=True)
class Sent:
    source: str = "/my/app"
    ce_id: str = "e-1"
    data: dict[str, Any] = field(default_factory=lambda: {
        "model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8,
        "temperature": None, "top_p": None, "seed": None})


def ports() -> AdmitPorts:
    clock = FixedClock(datetime(2026, 11, 29, 12, 0, tzinfo=UTC))
    return AdmitPorts(MemoryRequestStore(clock), clock)


def clock_of(p: AdmitPorts) -> FixedClock:
    assert isinstance(p.clock, FixedClock)
    return p.clock


def test_request_id_is_the_same_uuid5_of_tenant_source_and_id_as_before() -> None:
    assert request_id_for("acme", "/my/app", "e-1") == "49525443-f45e-5561-9d45-4cfe7873b79a"
    assert request_id_for("other", "/my/app", "e-1") != request_id_for("acme", "/my/app", "e-1")


def test_a_new_request_is_stored_queued_with_the_same_payload_hash_as_before() -> None:
    p = ports()
    out = admit(ACME, Sent(), p)
    assert out.created
    # Inserting the same id again answers what the first insert stored.
    stored = p.requests.insert(NewRequest(out.request_id, "acme", "key-1", "/my/app", "e-1",
                                          "another-hash", "m", {}, datetime.now(UTC)))
    assert (stored.created, stored.status, stored.payload_hash, stored.admitted_at) == (
        False, "queued", "839e51e84336429ca440747204ae03cc70fa6cfbbaf2c7686b60f7b9e077bb2c",
        datetime(2026, 11, 29, 12, 0, tzinfo=UTC))


def test_a_new_request_returns_its_admitted_payload_stamped_by_the_clock() -> None:
    out = admit(ACME, Sent(), ports())
    (payload,) = out.admitted
    assert payload.request_id == out.request_id == request_id_for("acme", "/my/app", "e-1")
    assert (payload.tenant, payload.key_id, payload.model) == ("acme", "key-1", "m")
    assert payload.messages == (Message("user", "hi"),)
    assert (payload.max_tokens, payload.temperature, payload.top_p, payload.seed) == (
        8, None, None, None)
    assert payload.admitted_at_ms == datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def test_a_resend_while_queued_is_published_again_identical_to_the_first() -> None:
    p = ports()
    clock_of(p).advance(0.0015)  # admission times travel to the millisecond
    first = admit(ACME, Sent(), p)
    clock_of(p).advance(30)
    second = admit(ACME, Sent(), p)
    assert second.request_id == first.request_id
    assert not second.created
    # The first admission's time, not the resend's: a new timestamp made the resend a
    # "different payload" downstream.
    assert second.admitted == first.admitted
    assert first.admitted[0].admitted_at_ms == datetime(2026, 11, 29, 12, 0, 0, 1000,
                                                        tzinfo=UTC)


def test_the_stored_request_keeps_the_clients_data_to_be_published_again() -> None:
    p = ports()
    out = admit(ACME, Sent(), p)
    assert isinstance(p.requests, MemoryRequestStore)
    clock_of(p).advance(61)
    (stored,) = p.requests.open_since(clock_of(p).now(), 10)
    assert (stored.request_id, stored.status, stored.payload, stored.admitted_at) == (
        out.request_id, "queued", Sent().data, out.admitted[0].admitted_at_ms)


def test_a_resend_after_the_request_moved_on_publishes_nothing() -> None:
    p = ports()
    first = admit(ACME, Sent(), p)
    p.requests.mark_reserved([ReservedMark(first.request_id, 20, 12)])
    again = admit(ACME, Sent(), p)
    assert (again.request_id, again.created, again.admitted) == (first.request_id, False, [])


def test_the_same_event_id_with_another_payload_is_a_conflict() -> None:
    p = ports()
    admit(ACME, Sent(), p)
    changed = Sent(data={**Sent().data, "max_tokens": 9})
    with pytest.raises(IdempotencyConflict, match="different payload"):
        admit(ACME, changed, p)


def test_the_same_event_id_from_another_source_is_another_request() -> None:
    p = ports()
    a = admit(ACME, Sent(), p)
    b = admit(ACME, Sent(source="/other"), p)
    assert a.request_id != b.request_id
    assert b.created


def test_stop_sequences_and_streaming_the_client_asked_for_travel_in_the_payload() -> None:
    sent = Sent(data={**Sent().data, "stop": ["\n\n"], "stream": True})
    (payload,) = admit(ACME, sent, ports()).admitted
    assert (payload.stop, payload.stream) == (("\n\n",), True)


def refusing(known_hash: str | None = None) -> Callable[[str, str], Screened]:
    """A screen that refuses every request it does not recognise (as over its limits)."""
    def screen(_request_id: str, _digest: str) -> Screened:
        if known_hash is not None:
            return Screened(known_hash=known_hash)
        return Screened(refusal=LookupError("over the limit"))
    return screen


def test_a_refused_new_request_raises_the_refusal_and_stores_nothing() -> None:
    p = ports()
    with pytest.raises(LookupError, match="over the limit"):
        admit(ACME, Sent(), p, refusing())
    assert p.requests.find(request_id_for("acme", "/my/app", "e-1")) is None


def test_a_resend_whose_fast_record_was_lost_is_answered_from_the_store_not_refused() -> None:
    p = ports()
    first = admit(ACME, Sent(), p)
    again = admit(ACME, Sent(), p, refusing())  # e.g. Redis flushed: screened as new, refused
    assert (again.request_id, again.created) == (first.request_id, False)
    assert again.admitted == first.admitted


def test_a_resend_with_a_fast_record_is_stored_idempotently_without_the_limits() -> None:
    p = ports()
    first = admit(ACME, Sent(), p)
    digest = p.requests.find(first.request_id).payload_hash  # type: ignore[union-attr]
    again = admit(ACME, Sent(), p, refusing(known_hash=digest))
    assert (again.created, again.admitted) == (False, first.admitted)


def test_a_fast_record_of_another_payload_is_checked_against_the_store() -> None:
    p = ports()
    admit(ACME, Sent(), p)
    stale = refusing(known_hash="another payload's hash")
    # The store holds this payload: the record was stale, the resend is answered.
    assert admit(ACME, Sent(), p, stale).created is False
    changed = Sent(data={**Sent().data, "max_tokens": 9})
    with pytest.raises(IdempotencyConflict):
        admit(ACME, changed, p, refusing(known_hash="another payload's hash"))
    # Recorded with another payload that was never stored (its insert failed): this one is
    # the id's first request.
    fresh = admit(ACME, Sent(ce_id="e-2"), p, stale)
    assert fresh.created and len(fresh.admitted) == 1
    with pytest.raises(IdempotencyConflict):  # and from now on the id's payload
        admit(ACME, Sent(ce_id="e-2", data={**Sent().data, "max_tokens": 9}), p, stale)
