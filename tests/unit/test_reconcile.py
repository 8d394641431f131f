"""The reconciler, run by settle's tick on the in-memory ports: whatever message was lost, an
admitted request ends exactly once, charged once, within its deadline; a re-drive is the first
message again, so every step answers its first outcome; re-drives are counted and spaced."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta

from quotaflow.events.payloads import Admitted, Payload, Recorded, Rejected, Reserved, Settled
from quotaflow.functions.estimate.handler import EstimatePorts
from quotaflow.functions.estimate.handler import handle as estimate
from quotaflow.functions.infer.handler import InferPorts
from quotaflow.functions.infer.handler import handle as infer
from quotaflow.functions.record.handler import RecordPorts
from quotaflow.functions.record.handler import handle as record
from quotaflow.functions.reserve.handler import ReservePorts
from quotaflow.functions.reserve.handler import handle as reserve
from quotaflow.functions.settle.handler import SettlePorts, sweep
from quotaflow.functions.settle.handler import handle as settle
from quotaflow.ledger.domain import Balance
from quotaflow.model.standin import StandInModel
from quotaflow.ports import NewRequest
from quotaflow.runtime.reconcile import Reconciler
from tests.unit.fakes import World, admitted

REDRIVE_S, DEADLINE_S, TTL_S = 60, 900, 300
MODEL = StandInModel()


def ports(w: World) -> SettlePorts:
    return SettlePorts(w.ledger, w.projection, w.outbox, TTL_S,
                       Reconciler(w.requests, w.clock, REDRIVE_S, DEADLINE_S))


def world() -> World:
    w = World()
    w.ledger.add_tenant("acme", 1000)
    return w


def to_reserved(w: World, *payloads: Admitted) -> list[Reserved | Rejected]:
    return reserve(estimate(payloads, EstimatePorts(MODEL)),
                   ReservePorts(w.ledger, w.projection, w.requests))


def to_settled(w: World, payloads: Sequence[Reserved | Rejected]) -> list[Settled | Rejected]:
    reserved = [p for p in payloads if isinstance(p, Reserved)]
    return [*settle(infer(reserved, InferPorts(MODEL)), ports(w)),
            *(p for p in payloads if isinstance(p, Rejected))]


def run(w: World, payloads: Sequence[Payload]) -> list[Recorded]:
    """Deliver re-driven payloads to the step that consumes them, to the end of the chain."""
    a = [p for p in payloads if isinstance(p, Admitted)]
    r = [p for p in payloads if isinstance(p, Reserved)]
    return record(to_settled(w, [*to_reserved(w, *a), *r]), RecordPorts(w.requests))


def view(w: World, request_id: str) -> tuple[str, int | None]:
    v = w.requests.fetch("acme", request_id)
    assert v is not None
    return v.status, v.charged_tokens


def test_a_request_whose_admitted_message_was_lost_is_published_again_and_ends() -> None:
    w = world()
    lost = admitted("r1")
    w.queue(lost)  # admit stored it; its `admitted` never reached estimate
    w.clock.advance(REDRIVE_S - 1)
    assert sweep(ports(w)) == []  # not yet: it may still be on its way
    w.clock.advance(2)
    (again,) = sweep(ports(w))
    assert again == lost  # the first message, field for field
    run(w, [again])
    assert view(w, "r1") == ("completed", w.ledger.balance("acme", "2026-11").spent)
    assert w.ledger.balance("acme", "2026-11").reserved == 0


def test_a_message_only_delayed_runs_twice_and_is_charged_once() -> None:
    w = world()
    first = admitted("r1")
    w.queue(first)
    w.clock.advance(REDRIVE_S + 1)
    (again,) = sweep(ports(w))
    run(w, [first])
    run(w, [again])
    status, charged = view(w, "r1")
    assert status == "completed" and charged
    assert w.ledger.balance("acme", "2026-11") == Balance(granted=1000, spent=charged)
    assert [e.kind.value for e in w.ledger.events_after(0)] == [
        "QuotaGranted", "TokensReserved", "ReservationSettled"]


def test_a_reserved_request_is_published_again_from_its_first_reservation() -> None:
    w = world()
    w.queue(admitted("r1"))
    (first,) = to_reserved(w, admitted("r1"))  # its `reserved` message is then lost
    assert isinstance(first, Reserved)
    w.clock.advance(REDRIVE_S + 1)
    (again,) = sweep(ports(w))
    assert again == first
    assert w.ledger.balance("acme", "2026-11").reserved == first.reserved_tokens
    run(w, [again])
    status, charged = view(w, "r1")
    assert status == "completed"
    assert w.ledger.balance("acme", "2026-11") == Balance(granted=1000, spent=charged)


def test_a_request_whose_settled_message_was_lost_gets_the_first_settlement() -> None:
    w = world()
    w.queue(admitted("r1"))
    (first,) = to_settled(w, to_reserved(w, admitted("r1")))  # then lost before record
    assert isinstance(first, Settled) and first.charged_tokens
    w.clock.advance(REDRIVE_S + 1)
    again = sweep(ports(w))
    assert [type(p) for p in again] == [Reserved]
    run(w, again)  # inferred again; settle answers the first settlement
    assert view(w, "r1") == ("completed", first.charged_tokens)
    assert w.ledger.balance("acme", "2026-11") == Balance(granted=1000,
                                                          spent=first.charged_tokens)


def test_re_drives_are_counted_and_spaced_and_a_request_that_moves_is_left_alone() -> None:
    w = world()
    w.queue(admitted("idle"), admitted("busy"))
    w.clock.advance(REDRIVE_S + 1)
    to_reserved(w, admitted("busy"))  # progress: it moved to `reserved` just now
    assert [p.request_id for p in sweep(ports(w))] == ["idle"]
    w.clock.advance(REDRIVE_S / 2)
    assert sweep(ports(w)) == []  # re-driven less than `redrive_after_s` ago
    w.clock.advance(REDRIVE_S / 2 + 1)
    assert sorted(p.request_id for p in sweep(ports(w))) == ["busy", "idle"]
    counted = {r.request_id: r.redrives
               for r in w.requests.open_since(w.clock.now() + timedelta(days=1), 10)}
    assert counted == {"idle": 2, "busy": 1}


def test_past_its_deadline_a_queued_request_ends_rejected_and_a_late_delivery_holds_nothing(
        ) -> None:
    w = world()
    w.queue(admitted("r1"))
    w.clock.advance(DEADLINE_S + 1)
    assert sweep(ports(w)) == []
    v = w.requests.fetch("acme", "r1")
    assert v is not None and (v.status, v.charged_tokens) == ("rejected", 0)
    assert v.reason is not None and v.reason.startswith("deadline")
    # A late delivery of its `admitted` (a message only delayed) finds the request closed at
    # the ledger: nothing is reserved, not even until the TTL, and the record stays as it was.
    run(w, [admitted("r1")])
    assert view(w, "r1") == ("rejected", 0)
    assert w.ledger.balance("acme", "2026-11") == Balance(granted=1000)


def test_past_its_deadline_a_queued_request_the_ledger_had_reserved_ends_failed_and_released(
        ) -> None:
    w = world()
    w.queue(admitted("r1"))
    # Reserved by the ledger, but its mark as `reserved` was lost.
    reserve(estimate([admitted("r1")], EstimatePorts(MODEL)),
            ReservePorts(w.ledger, w.projection, _Unmarked(w.requests)))  # type: ignore[arg-type]
    assert view(w, "r1") == ("queued", None)
    w.clock.advance(DEADLINE_S + 1)
    sweep(replace(ports(w), reservation_ttl_s=DEADLINE_S * 2))  # the deadline comes first
    assert view(w, "r1") == ("failed", 0)
    assert w.ledger.balance("acme", "2026-11") == Balance(granted=1000)


class _Unmarked:
    """A request store whose `mark_reserved` is lost."""

    def __init__(self, inner: object) -> None:
        self.inner = inner

    def mark_reserved(self, marks: object) -> None:
        pass

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_past_its_deadline_a_request_whose_reservation_expired_ends_expired() -> None:
    w = world()
    w.queue(admitted("r1"))
    to_reserved(w, admitted("r1"))  # inference never answers
    w.clock.advance(TTL_S + 1)
    # Its reservation expires (the expiry's `settled` is lost) and it is re-driven (that is
    # lost too): at its deadline the request ends as the ledger ended its reservation.
    assert sorted(type(p).__name__ for p in sweep(ports(w))) == ["Reserved", "Settled"]
    assert view(w, "r1") == ("reserved", None)
    w.clock.advance(DEADLINE_S - TTL_S)
    assert sweep(ports(w)) == []
    assert view(w, "r1") == ("expired", 0)
    assert w.ledger.balance("acme", "2026-11") == Balance(granted=1000)


def test_past_its_deadline_a_charged_request_is_recorded_with_its_charge() -> None:
    w = world()
    w.queue(admitted("r1"))
    settled = to_settled(w, to_reserved(w, admitted("r1")))  # record never got it
    assert isinstance(settled[0], Settled)
    w.clock.advance(DEADLINE_S + 1)
    sweep(ports(w))
    assert view(w, "r1") == ("completed", settled[0].charged_tokens)


def test_a_request_stored_without_its_data_is_not_re_driven_but_ends_at_its_deadline() -> None:
    w = world()
    p = admitted("r1")
    w.requests.insert(NewRequest("r1", "acme", "key-1", "/old", "r1", "h", p.model, {},
                                 p.admitted_at_ms))
    w.clock.advance(REDRIVE_S + 1)
    assert sweep(ports(w)) == []
    w.clock.advance(DEADLINE_S)
    sweep(ports(w))
    assert view(w, "r1") == ("rejected", 0)


def test_a_tick_without_a_reconciler_only_expires_and_publishes() -> None:
    w = world()
    w.queue(admitted("r1"))
    w.clock.advance(DEADLINE_S + 1)
    assert sweep(replace(ports(w), reconciler=None)) == []
    assert view(w, "r1") == ("queued", None)


def test_a_request_that_cannot_be_re_driven_does_not_hold_the_batch_from_others() -> None:
    w = world()
    p = admitted("old")
    w.requests.insert(NewRequest("old", "acme", "key-1", "/old", "old", "h", p.model, {},
                                 p.admitted_at_ms))
    w.clock.advance(1)
    w.queue(replace(admitted("next"), admitted_at_ms=w.clock.now()))
    one_at_a_time = replace(ports(w), reconciler=Reconciler(w.requests, w.clock, REDRIVE_S,
                                                            DEADLINE_S, batch=1))
    w.clock.advance(REDRIVE_S + 1)
    assert sweep(one_at_a_time) == []  # looked at "old", the stalest, and left it
    assert [p.request_id for p in sweep(one_at_a_time)] == ["next"]
