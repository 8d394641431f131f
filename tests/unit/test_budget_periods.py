"""Budget periods by the clock port, on the in-memory ledger: a monthly plan's period is the
tenant's calendar month in its own zone, and a request reserved before a reset settles
against the period it reserved in, at every level."""

from __future__ import annotations

from datetime import UTC, datetime

from quotaflow.adapters.clock import FixedClock
from quotaflow.adapters.memory.ledger import MemoryLedger
from quotaflow.events.status import LevelScope
from quotaflow.ledger.budgets import LevelBalance
from quotaflow.ledger.commands import ReserveTokens, SettleReservation
from quotaflow.ledger.domain import Kind


def test_a_tenant_in_tokyo_is_in_december_while_utc_is_still_in_november():
    ledger = MemoryLedger(FixedClock(datetime(2026, 11, 30, 16, 0, tzinfo=UTC)))
    ledger.add_tenant("tokyo", 100, time_zone="Asia/Tokyo")
    ledger.add_tenant("london", 100)
    assert ledger.current_period("tokyo") == "2026-12"
    assert ledger.current_period("london") == "2026-11"


def test_a_reset_mid_request_settles_against_the_period_it_reserved_in():
    clock = FixedClock(datetime(2026, 11, 30, 23, 59, 30, tzinfo=UTC))
    ledger = MemoryLedger(clock)
    ledger.add_tenant("acme", 1_000)
    ledger.add_key("acme", "k1", tokens=100)
    (o,) = ledger.reserve([ReserveTokens("acme", "r", 100, "h", "k1", "m", 10)])
    assert o.period == "2026-11"
    clock.advance(60)  # the month turns while the request runs
    assert ledger.current_period("acme") == "2026-12"
    (s,) = ledger.end([SettleReservation("acme", "r", 30, "s")])
    assert (s.kind, s.period) == (Kind.RESERVATION_SETTLED, "2026-11")
    book = ledger.budgets.book
    assert book[(LevelScope.KEY, "k1", "2026-11")] == LevelBalance(0, 30, 0, 0)
    assert (LevelScope.KEY, "k1", "2026-12") not in book
    # the new month starts with the key's whole limit
    (n,) = ledger.reserve([ReserveTokens("acme", "n", 100, "h2", "k1", "m", 10)])
    assert n.accepted and n.period == "2026-12"
