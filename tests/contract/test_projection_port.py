"""The `Projection` contract, run against `MemoryProjection` and `RedisProjection` (on plain
Redis, db index 12; on Redis over TLS with a password; on a 3-master Redis Cluster:
`tests.redis_servers`), all fed by the same in-memory ledger: catching up gives the ledger's
balances, applying an event twice changes nothing, and the last sequence applied follows the
ledger.
`-k memory` runs the in-memory projection alone, with no services."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol

import pytest

from quotaflow.adapters.clock import FixedClock
from quotaflow.adapters.memory.ledger import MemoryLedger
from quotaflow.adapters.memory.projection import MemoryProjection
from quotaflow.events.status import LevelScope
from quotaflow.ledger.budgets import LevelBalance
from quotaflow.ledger.commands import (
    ReleaseReservation,
    ReserveTokens,
    SettleReservation,
    StoredEvent,
)
from quotaflow.ledger.domain import Balance, Kind
from quotaflow.ports import Projection
from tests.contract.ledger_backends import REDIS_DB
from tests.redis_servers import REDIS_VARIANTS, client


class AppliedProjection(Projection, Protocol):
    """A projection that also takes events directly, as both adapters do."""

    def apply(self, events: Sequence[StoredEvent]) -> int: ...

    def levels(self) -> dict[tuple[str, str, str], LevelBalance]: ...

    def level(self, tenant: str, scope: LevelScope, level_id: str,
              period: str) -> LevelBalance: ...


@pytest.fixture(params=["memory", *REDIS_VARIANTS])
def projection(request: pytest.FixtureRequest) -> AppliedProjection:
    if request.param == "memory":
        return MemoryProjection()
    from quotaflow.ledger.projection import RedisProjection

    return RedisProjection(client(request.param, REDIS_DB))


@pytest.fixture
def ledger() -> MemoryLedger:
    """Two tenants with reservations settled, released, rejected and still open; acme's at
    its keys k1 (team ml) and k2 (no team), priced."""
    ledger = MemoryLedger(FixedClock())
    ledger.add_tenant("acme", 500)
    ledger.add_tenant("bravo", 100, plan_period="day")
    ledger.add_team("acme", "ml")
    ledger.add_key("acme", "k1", "ml")
    ledger.add_key("acme", "k2")
    ledger.set_price("m", 2_000_000, 3_000_000)
    ledger.reserve([ReserveTokens("acme", f"a{i}", 100, "h", key_id=f"k{1 + i % 2}",
                                  model="m", input_tokens=10) for i in range(4)]
                   + [ReserveTokens("bravo", "b1", 80, "h"), ReserveTokens("bravo", "b2", 80, "h")])
    ledger.end([SettleReservation("acme", "a0", 30, "s"),
                ReleaseReservation("acme", "a1", "x", "r"),
                SettleReservation("bravo", "b1", 80, "s")])
    return ledger


def levels_of(ledger: MemoryLedger) -> dict[tuple[str, str, str], LevelBalance]:
    return {(s.value, lid, p): b for (s, lid, p), b in ledger.budgets.book.items()}


def balances_of(ledger: MemoryLedger) -> dict[tuple[str, str], Balance]:
    keys = {(e.tenant, e.period) for e in ledger.events_after(0)}
    return {(t, p): ledger.balance(t, p) for t, p in keys}


def test_catching_up_gives_the_ledgers_balances(projection: AppliedProjection,
                                                ledger: MemoryLedger) -> None:
    # Each adapter may get there by replaying events or by a rebuild from the ledger's
    # balances snapshot (which applies no event): the balances and the position must agree.
    projection.catch_up(ledger)
    assert projection.last_seq() == ledger.events_after(0)[-1].seq
    expected = balances_of(ledger)
    assert {k: projection.balance(*k) for k in expected} == expected
    acme = projection.balance("acme", ledger.current_period("acme"))
    assert (acme.granted, acme.reserved, acme.spent) == (500, 200, 30)


def test_catching_up_again_applies_only_what_is_new(projection: AppliedProjection,
                                                   ledger: MemoryLedger) -> None:
    projection.catch_up(ledger)
    assert projection.catch_up(ledger) == 0
    ledger.end([SettleReservation("acme", "a2", 100, "s")])
    assert projection.catch_up(ledger) == 1
    expected = balances_of(ledger)
    assert {k: projection.balance(*k) for k in expected} == expected


def test_applying_events_again_changes_nothing(projection: AppliedProjection,
                                               ledger: MemoryLedger) -> None:
    projection.catch_up(ledger)
    before = {k: projection.balance(*k) for k in balances_of(ledger)}
    assert projection.apply(ledger.events_after(0)) == 0
    assert projection.apply(ledger.events_after(2, limit=3)) == 0
    assert {k: projection.balance(*k) for k in before} == before


def test_last_seq_starts_at_zero_and_follows_the_ledger(projection: AppliedProjection,
                                                       ledger: MemoryLedger) -> None:
    assert projection.last_seq() == 0
    events = ledger.events_after(0)
    projection.apply(events[:3])
    assert projection.last_seq() == events[2].seq
    projection.catch_up(ledger)
    assert projection.last_seq() == events[-1].seq


def test_a_period_never_projected_has_a_zero_balance(projection: AppliedProjection,
                                                     ledger: MemoryLedger) -> None:
    projection.catch_up(ledger)
    assert projection.balance("acme", "1999-01") == Balance()
    assert projection.balance("nobody", ledger.current_period("acme")) == Balance()


@pytest.mark.parametrize("variant", REDIS_VARIANTS)
def test_a_redis_rebuild_lists_every_balance_and_drops_the_untagged_layout(
        variant: str, ledger: MemoryLedger) -> None:
    from quotaflow.ledger.projection import RedisProjection

    c = client(variant, REDIS_DB)
    c.hset("qf:balance:acme:2026-11", mapping={"granted": 1})  # as stored before the tags
    c.set("qf:projection:last_seq", 99)
    projection = RedisProjection(c, rows_per_call=1)  # a chunk a balance: several calls
    projection.rebuild(ledger)
    assert projection.balances() == balances_of(ledger)
    assert projection.levels() == levels_of(ledger)
    assert c.exists("qf:balance:acme:2026-11", "qf:projection:last_seq") == 0
    assert projection.last_seq() == ledger.events_after(0)[-1].seq


def test_catching_up_gives_every_levels_tokens_and_money(projection: AppliedProjection,
                                                        ledger: MemoryLedger) -> None:
    projection.catch_up(ledger)
    assert projection.levels() == levels_of(ledger)
    period = ledger.current_period("acme")
    # a0 (k1) settled 30 of 100 tokens, a1 (k2) released; a2 (k1) and a3 (k2) still open.
    k1 = projection.level("acme", LevelScope.KEY, "k1", period)
    assert (k1.reserved_tokens, k1.spent_tokens) == (100, 30)
    assert (k1.reserved_usd, k1.spent_usd) == (290, 80)  # 10 in at $2, 90|20 out at $3 /Mtok
    team = projection.level("acme", LevelScope.TEAM, "acme/ml", period)
    assert team == k1
    tenant = projection.level("acme", LevelScope.TENANT, "acme", period)
    assert (tenant.reserved_tokens, tenant.spent_tokens) == (200, 30)
    assert (tenant.reserved_usd, tenant.spent_usd) == (580, 80)


def test_applying_events_again_moves_no_level(projection: AppliedProjection,
                                              ledger: MemoryLedger) -> None:
    projection.catch_up(ledger)
    before = projection.levels()
    assert projection.apply(ledger.events_after(0)) == 0
    ledger.end([SettleReservation("acme", "a2", 50, "s")])
    projection.catch_up(ledger)
    projection.apply(ledger.events_after(0))
    assert projection.levels() == levels_of(ledger) != before


def test_amounts_past_fourteen_digits_are_projected_exactly(
        projection: AppliedProjection) -> None:
    at = datetime(2026, 11, 29, tzinfo=UTC)
    projection.apply([
        StoredEvent(1, "big", 1, Kind.QUOTA_GRANTED, None, "2026-11", 10**15 + 1, 0, None, at),
        StoredEvent(2, "big", 2, Kind.TOKENS_RESERVED, "r", "2026-11", 10**15 - 3, 0, None, at,
                    "k", None, 10**15 + 7),
        StoredEvent(3, "big", 3, Kind.TOKENS_RESERVED, "s", "2026-11", 1, 0, None, at,
                    "k", None, 1)])
    assert projection.balance("big", "2026-11") == Balance(10**15 + 1, 10**15 - 2, 0)
    assert projection.level("big", LevelScope.KEY, "k", "2026-11") == LevelBalance(
        10**15 - 2, 0, 10**15 + 8, 0)


@pytest.mark.parametrize("variant", REDIS_VARIANTS)
def test_a_redis_projection_from_before_the_levels_is_rebuilt_with_them_on_first_use(
        variant: str, ledger: MemoryLedger) -> None:
    from quotaflow.ledger.projection import LAST_SEQ_KEY, RedisProjection

    c = client(variant, REDIS_DB)
    # What the previous version left: balances, its generation and last sequence, no levels.
    for (t, p), b in balances_of(ledger).items():
        c.hset(f"qf:{{{t}}}:balance:{p}", mapping={"granted": b.granted, "reserved": b.reserved,
                                                   "spent": b.spent, "seq": 99})
    c.set("qf:{projection}:generation", "old")
    c.set(LAST_SEQ_KEY, ledger.events_after(0)[-1].seq)
    projection = RedisProjection(c)
    projection.sync(ledger)
    assert projection.levels() == levels_of(ledger)
    assert projection.balances() == balances_of(ledger)
