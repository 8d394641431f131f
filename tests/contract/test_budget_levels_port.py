"""The budget levels of the `Ledger` contract, run against `MemoryLedger` and `PostgresLedger`
(database `qf_test_contract_ledger`): a request is held at its key, its team and its tenant in
tokens and money, refused by the first level over a limit (named), settled at the price
version it was reserved at, and released or expired at every level. `-k memory` runs the
in-memory ledger alone, with no services."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from quotaflow.adapters.memory.ledger import MemoryLedger
from quotaflow.events.status import LevelScope
from quotaflow.ledger.budgets import LevelBalance, parse_usd, period_in_zone
from quotaflow.ledger.commands import ReleaseReservation, ReserveTokens, SettleReservation
from quotaflow.ledger.domain import Kind
from quotaflow.ports import Ledger
from tests.contract.ledger_backends import memory_ledger, postgres

MODEL = "smollm2"


@dataclass
class Budgets:
    """A ledger and how to give it tenants, teams, keys and prices."""

    ledger: Ledger
    add_tenant: Callable[..., None]  # (tenant, tokens, usd=None, time_zone="UTC")
    add_team: Callable[..., None]  # (tenant, team, tokens=None, usd=None)
    add_key: Callable[..., str]  # (tenant, team=None, tokens=None, usd=None) -> key id
    set_price: Callable[[str, int, int], Any]
    age_reservations: Callable[[int], None]


def _memory() -> Budgets:
    lut = memory_ledger()
    ledger = lut.ledger
    assert isinstance(ledger, MemoryLedger)
    ids = iter(range(1, 1000))

    def add_key(tenant: str, team: str | None = None, tokens: int | None = None,
                usd: int | None = None) -> str:
        key_id = f"k{next(ids)}"
        ledger.add_key(tenant, key_id, team, tokens, usd)
        return key_id

    return Budgets(ledger, ledger.add_tenant, ledger.add_team, add_key, ledger.set_price,
                   lut.age_reservations)


def _postgres(conn: Any) -> Budgets:
    from quotaflow.adapters import budget_store
    from quotaflow.adapters import tenant_store as tenants
    from quotaflow.ledger.store import PostgresLedger

    def add_tenant(tenant: str, tokens: int, usd: int | None = None,
                   time_zone: str = "UTC") -> None:
        tenants.create_tenant(conn, tenant, tokens, usd=usd, time_zone=time_zone)

    def add_key(tenant: str, team: str | None = None, tokens: int | None = None,
                usd: int | None = None) -> str:
        return tenants.create_key(conn, tenant, team=team, tokens=tokens,
                                  usd=usd).split("_")[1]

    def age(seconds: int) -> None:
        conn.execute("UPDATE reservations SET reserved_at = reserved_at - "
                     "make_interval(secs => %s)", (seconds,))

    return Budgets(PostgresLedger(conn), add_tenant,
                   lambda *a, **k: budget_store.create_team(conn, *a, **k), add_key,
                   lambda m, i, o: budget_store.set_price(conn, m, i, o), age)


@pytest.fixture(params=["memory", "postgres"])
def bud(request: pytest.FixtureRequest) -> Iterator[Budgets]:
    if request.param == "memory":
        yield _memory()
        return
    with postgres() as conn:
        yield _postgres(conn)


def reserve(b: Budgets, rid: str, key: str | None, prompt: int, max_tokens: int) -> Any:
    (o,) = b.ledger.reserve([ReserveTokens("acme", rid, prompt + max_tokens, f"h-{rid}", key,
                                           MODEL, prompt)])
    return o


def money(b: Budgets, rid: str) -> list[tuple[Kind, int, int, int | None]]:
    return [(e.kind, e.usd, e.usd_released, e.price_version)
            for e in b.ledger.events_after(0) if e.request_id == rid]


def test_the_first_level_over_its_limit_refuses_and_is_named(bud: Budgets) -> None:
    bud.add_tenant("acme", 1_000)
    bud.add_team("acme", "ml", tokens=250)
    key = bud.add_key("acme", "ml", tokens=200)
    other = bud.add_key("acme", "ml")
    assert reserve(bud, "a", key, 50, 100).accepted
    over_key = reserve(bud, "b", key, 50, 10)
    assert over_key.reason == (f"quota_exceeded: key '{key}' of tenant 'acme' has 50 of 200 "
                               "tokens left this period")
    over_team = reserve(bud, "c", other, 1, 100)
    assert over_team.reason == ("quota_exceeded: team 'ml' of tenant 'acme' has 100 of 250 "
                                "tokens left this period")
    assert reserve(bud, "d", other, 1, 99).accepted


def test_the_tenants_money_limit_refuses_once_its_dollars_are_held(bud: Budgets) -> None:
    bud.add_tenant("acme", 1_000_000, usd=parse_usd("0.001"))
    key = bud.add_key("acme")
    bud.set_price(MODEL, parse_usd("1"), parse_usd("10"))
    assert reserve(bud, "a", key, 100, 80).accepted  # 100 + 800 micro-dollars
    assert reserve(bud, "b", key, 100, 80).reason == (
        "quota_exceeded: tenant 'acme' has $0.000100 of $0.001000 left this period")


def test_settlement_charges_at_the_reserved_price_version_and_returns_the_rest(
        bud: Budgets) -> None:
    bud.add_tenant("acme", 1_000_000)
    key = bud.add_key("acme", usd=parse_usd("1"))
    bud.set_price(MODEL, parse_usd("1"), parse_usd("2"))
    reserve(bud, "r", key, 40, 60)  # 40 + 120
    bud.set_price(MODEL, parse_usd("50"), parse_usd("50"))
    bud.ledger.end([SettleReservation("acme", "r", 50, "s")])  # 40 + 20 at version 1
    assert money(bud, "r") == [(Kind.TOKENS_RESERVED, 160, 0, 1),
                               (Kind.RESERVATION_SETTLED, 60, 100, 1)]
    assert reserve(bud, "next", key, 40, 60).accepted
    assert money(bud, "next")[0][1:] == (40 * 50 + 60 * 50, 0, 2)


def test_release_and_expiry_return_the_money_at_every_level(bud: Budgets) -> None:
    bud.add_tenant("acme", 1_000_000)
    bud.add_team("acme", "ml", usd=200)
    key = bud.add_key("acme", "ml")
    bud.set_price(MODEL, parse_usd("1"), parse_usd("1"))
    assert reserve(bud, "a", key, 50, 50).accepted and reserve(bud, "b", key, 50, 50).accepted
    assert not reserve(bud, "c", key, 1, 0).accepted  # the team's $0.000200 is held
    bud.ledger.end([ReleaseReservation("acme", "a", "failed", "x")])
    bud.age_reservations(3600)
    assert [o.kind for o in bud.ledger.expire_stale(60)] == [Kind.RESERVATION_EXPIRED]
    assert money(bud, "b")[-1] == (Kind.RESERVATION_EXPIRED, 100, 0, 1)
    assert reserve(bud, "d", key, 100, 100).accepted


def test_a_tenants_month_is_its_calendar_month_in_its_zone(bud: Budgets) -> None:
    bud.add_tenant("acme", 100, time_zone="Pacific/Kiritimati")  # UTC+14
    now = getattr(getattr(bud.ledger, "clock", None), "now", lambda: datetime.now(UTC))()
    assert bud.ledger.current_period("acme") == period_in_zone("month", now,
                                                               "Pacific/Kiritimati")
    assert reserve(bud, "a", None, 1, 1).period == bud.ledger.current_period("acme")


def test_the_level_snapshot_holds_the_levels_of_the_periods_asked_up_to_the_last_event(
        bud: Budgets) -> None:
    bud.add_tenant("acme", 1_000_000)
    bud.add_tenant("bravo", 1_000)
    bud.add_team("acme", "ml")
    key = bud.add_key("acme", "ml")
    bud.set_price(MODEL, parse_usd("1"), parse_usd("2"))
    reserve(bud, "a", key, 40, 60)  # 40 + 120 micro-dollars
    bud.ledger.end([SettleReservation("acme", "a", 50, "s")])  # 40 + 20
    bud.ledger.reserve([ReserveTokens("bravo", "b", 10, "h")])
    period = bud.ledger.current_period("acme")
    seq, rows = bud.ledger.level_snapshot([("acme", period)])
    assert seq == bud.ledger.events_after(0)[-1].seq
    want = LevelBalance(0, 50, 0, 60)
    assert sorted((r.tenant, r.scope, r.level_id, r.period, r.balance) for r in rows) == [
        ("acme", LevelScope.KEY, key, period, want),
        ("acme", LevelScope.TEAM, "acme/ml", period, want),
        ("acme", LevelScope.TENANT, "acme", period, want)]
    assert bud.ledger.level_snapshot([("acme", "1999-01")])[1] == []
    (bravo,) = bud.ledger.level_snapshot([("bravo", period)])[1]
    assert (bravo.scope, bravo.balance.reserved_tokens) == (LevelScope.TENANT, 10)
