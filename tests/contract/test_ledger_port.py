"""The `Ledger` contract, run against `MemoryLedger` and `PostgresLedger` (database
`qf_test_contract_ledger`): quota decisions, idempotency, endings exactly once, expiry, and the
committed events. `-k memory` runs the in-memory ledger alone, with no services."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from quotaflow.ledger.commands import (
    ReleaseReservation,
    ReserveTokens,
    SettleReservation,
)
from quotaflow.ledger.domain import Balance, Kind
from tests.contract.ledger_backends import (
    LedgerUnderTest,
    memory_ledger,
    postgres,
    postgres_ledger,
)

CONFLICT = "idempotency_conflict: same request id, different payload"


@pytest.fixture(params=["memory", "postgres"])
def lut(request: pytest.FixtureRequest) -> Iterator[LedgerUnderTest]:
    if request.param == "memory":
        yield memory_ledger()
        return
    with postgres() as conn:
        yield postgres_ledger(conn)


def event_count(lut: LedgerUnderTest) -> int:
    return len(lut.ledger.events_after(0))


def test_a_reservation_within_the_quota_is_accepted_and_held(lut: LedgerUnderTest) -> None:
    lut.add_tenant("acme", 100)
    period = lut.ledger.current_period("acme")
    (o,) = lut.ledger.reserve([ReserveTokens("acme", "r1", 60, "h")])
    assert (o.request_id, o.tenant, o.kind, o.period, o.amount, o.reserved, o.reason) == \
        ("r1", "acme", Kind.TOKENS_RESERVED, period, 60, 60, None)
    assert o.accepted and o.seq > 0
    b = lut.ledger.balance("acme", period)
    assert (b.granted, b.reserved, b.spent, b.remaining) == (100, 60, 0, 40)


def test_a_reservation_over_the_quota_is_rejected_and_holds_nothing(
        lut: LedgerUnderTest) -> None:
    lut.add_tenant("acme", 100)
    period = lut.ledger.current_period("acme")
    ok, over, empty = lut.ledger.reserve([ReserveTokens("acme", "r1", 60, "h"),
                                          ReserveTokens("acme", "r2", 50, "h"),
                                          ReserveTokens("acme", "r3", 0, "h")])
    assert ok.accepted
    assert (over.kind, over.reason, over.accepted) == (Kind.REQUEST_REJECTED, "quota_exceeded",
                                                        False)
    assert over.seq > ok.seq  # a rejection is a ledger event too
    assert (empty.kind, empty.reason) == (Kind.REQUEST_REJECTED, "invalid_amount")
    assert lut.ledger.balance("acme", period) == Balance(granted=100, reserved=60)


def test_a_redelivered_batch_gets_its_first_outcomes_and_is_not_charged_twice(
        lut: LedgerUnderTest) -> None:
    lut.add_tenant("acme", 100)
    batch = [ReserveTokens("acme", f"r{i}", 40, "h") for i in range(3)]
    first = lut.ledger.reserve(batch)
    events = event_count(lut)
    assert lut.ledger.reserve(batch[::-1]) == first[::-1]
    assert event_count(lut) == events
    settle = [SettleReservation("acme", "r0", 10, "s")]
    settled = lut.ledger.end(settle)
    assert lut.ledger.end(settle) == settled
    b = lut.ledger.balance("acme", lut.ledger.current_period("acme"))
    assert (b.reserved, b.spent) == (40, 10)


def test_the_same_request_id_with_another_payload_is_a_conflict(lut: LedgerUnderTest) -> None:
    lut.add_tenant("acme", 100)
    lut.ledger.reserve([ReserveTokens("acme", "x", 10, "payload-a")])
    events = event_count(lut)
    (clash,) = lut.ledger.reserve([ReserveTokens("acme", "x", 20, "payload-b")])
    assert (clash.kind, clash.reason, clash.seq) == (None, CONFLICT, 0)
    lut.ledger.end([ReleaseReservation("acme", "x", "failed", "end-a")])
    (end_clash,) = lut.ledger.end([SettleReservation("acme", "x", 5, "end-b")])
    assert (end_clash.kind, end_clash.reason) == (None, CONFLICT)
    assert event_count(lut) == events + 1  # the release alone


def test_the_same_command_twice_in_one_batch_is_decided_once(lut: LedgerUnderTest) -> None:
    lut.add_tenant("acme", 100)
    once, twice, other = lut.ledger.reserve([ReserveTokens("acme", "d", 30, "h"),
                                             ReserveTokens("acme", "d", 30, "h"),
                                             ReserveTokens("acme", "d", 31, "h2")])
    assert once == twice and once.accepted
    assert (other.kind, other.reason) == (None, CONFLICT)
    b = lut.ledger.balance("acme", lut.ledger.current_period("acme"))
    assert b.reserved == 30


def test_settling_charges_the_actual_tokens_and_returns_the_rest(lut: LedgerUnderTest) -> None:
    lut.add_tenant("acme", 1000)
    lut.ledger.reserve([ReserveTokens("acme", "a", 100, "h"),
                        ReserveTokens("acme", "b", 50, "h")])
    a, b = lut.ledger.end([SettleReservation("acme", "a", 30, "s"),
                           SettleReservation("acme", "b", 80, "s")])
    assert (a.kind, a.amount, a.released, a.reserved) == (Kind.RESERVATION_SETTLED, 30, 70, 100)
    assert (b.amount, b.released) == (50, 0)  # never more than reserved
    bal = lut.ledger.balance("acme", lut.ledger.current_period("acme"))
    assert (bal.reserved, bal.spent, bal.remaining) == (0, 80, 920)


def test_a_release_returns_the_whole_reservation_and_ends_it(lut: LedgerUnderTest) -> None:
    lut.add_tenant("acme", 100)
    lut.ledger.reserve([ReserveTokens("acme", "r", 70, "h")])
    (released,) = lut.ledger.end([ReleaseReservation("acme", "r", "inference failed", "x")])
    assert (released.kind, released.amount, released.reason) == \
        (Kind.RESERVATION_RELEASED, 70, "inference failed")
    bal = lut.ledger.balance("acme", lut.ledger.current_period("acme"))
    assert (bal.reserved, bal.spent, bal.remaining) == (0, 0, 100)


def test_an_expired_reservation_refuses_a_late_settlement(lut: LedgerUnderTest) -> None:
    lut.add_tenant("acme", 1000)
    lut.ledger.reserve([ReserveTokens("acme", "slow", 100, "h")])
    lut.age_reservations(3600)
    lut.ledger.reserve([ReserveTokens("acme", "fast", 10, "h")])
    expired = lut.ledger.expire_stale(ttl_s=600)
    assert [(o.request_id, o.kind, o.amount, o.reason) for o in expired] == \
        [("slow", Kind.RESERVATION_EXPIRED, 100, "ttl")]
    (late,) = lut.ledger.end([SettleReservation("acme", "slow", 50, "late")])
    assert (late.kind, late.reason, late.reserved) == (None, "reservation_expired", 100)
    assert lut.ledger.end([SettleReservation("acme", "slow", 50, "late")]) == [late]
    assert lut.ledger.expire_stale(ttl_s=600) == []
    bal = lut.ledger.balance("acme", lut.ledger.current_period("acme"))
    assert (bal.reserved, bal.spent) == (10, 0)


def test_an_ending_for_an_unknown_or_another_tenants_reservation_is_refused(
        lut: LedgerUnderTest) -> None:
    lut.add_tenant("acme", 100)
    lut.add_tenant("other", 100)
    lut.ledger.reserve([ReserveTokens("acme", "mine", 10, "h")])
    nobody, theirs = lut.ledger.end([SettleReservation("acme", "nobody", 5, "s"),
                                     SettleReservation("other", "mine", 5, "s")])
    assert (nobody.kind, nobody.reason) == (None, "unknown_reservation")
    assert (theirs.kind, theirs.reason) == (None, "unknown_reservation")
    assert lut.ledger.balance("acme", lut.ledger.current_period("acme")).reserved == 10


def test_unknown_tenants_are_refused(lut: LedgerUnderTest) -> None:
    (o,) = lut.ledger.reserve([ReserveTokens("ghost", "g", 10, "h")])
    assert (o.kind, o.reason, o.seq) == (None, "unknown_tenant", 0)
    assert lut.ledger.events_after(0) == []
    with pytest.raises(LookupError):
        lut.ledger.current_period("ghost")
    with pytest.raises(LookupError):
        lut.ledger.grant("ghost", 10)


def test_a_grant_adds_tokens_to_the_period(lut: LedgerUnderTest) -> None:
    lut.add_tenant("acme", 100)
    period = lut.ledger.current_period("acme")
    now = lut.ledger.grant("acme", 50)
    later = lut.ledger.grant("acme", 7, "2099-01")
    assert (now.kind, now.period, now.amount) == (Kind.QUOTA_GRANTED, period, 50)
    assert lut.ledger.balance("acme", period).granted == 150
    assert lut.ledger.balance("acme", "2099-01") == Balance(granted=7)
    assert later.seq > now.seq


def test_events_after_lists_committed_events_in_order_with_stream_versions(
        lut: LedgerUnderTest) -> None:
    lut.add_tenant("acme", 100)
    lut.add_tenant("bravo", 100)
    lut.ledger.reserve([ReserveTokens("acme", "a1", 10, "h"), ReserveTokens("bravo", "b1", 20, "h"),
                        ReserveTokens("acme", "a2", 30, "h")])
    lut.ledger.end([SettleReservation("acme", "a1", 4, "s")])
    events = lut.ledger.events_after(0)
    assert [(e.tenant, e.kind, e.request_id) for e in events] == [
        ("acme", Kind.QUOTA_GRANTED, None), ("bravo", Kind.QUOTA_GRANTED, None),
        ("acme", Kind.TOKENS_RESERVED, "a1"), ("bravo", Kind.TOKENS_RESERVED, "b1"),
        ("acme", Kind.TOKENS_RESERVED, "a2"), ("acme", Kind.RESERVATION_SETTLED, "a1")]
    seqs = [e.seq for e in events]
    assert seqs == sorted(set(seqs))
    assert [e.stream_version for e in events if e.tenant == "acme"] == [1, 2, 3, 4]
    assert [e.stream_version for e in events if e.tenant == "bravo"] == [1, 2]
    assert (events[-1].amount, events[-1].released) == (4, 6)
    assert all(e.recorded_at.tzinfo is not None for e in events)
    assert lut.ledger.events_after(seqs[2]) == events[3:]
    assert lut.ledger.events_after(seqs[0], limit=2) == events[1:3]
    assert lut.ledger.events_after(seqs[-1]) == []


def test_the_balance_snapshot_pages_every_balance_in_key_order_up_to_the_last_event(
        lut: LedgerUnderTest) -> None:
    for tenant in ("c", "a", "b"):
        lut.add_tenant(tenant, 100)
    period = lut.ledger.current_period("a")
    lut.ledger.reserve([ReserveTokens("b", "r1", 30, "h")])
    last = lut.ledger.events_after(0)[-1].seq
    seq, first = lut.ledger.balance_snapshot(("", ""), 2)
    assert seq == last
    assert [(t, p) for t, p, _ in first] == [("a", period), ("b", period)]
    assert first[1][2] == lut.ledger.balance("b", period)
    seq, rest = lut.ledger.balance_snapshot(("b", period), 2)
    assert (seq, [(t, b.granted) for t, _, b in rest]) == (last, [("c", 100)])
    assert lut.ledger.balance_snapshot(("c", period), 2)[1] == []
