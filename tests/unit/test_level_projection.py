"""The budget levels' part of the Redis projection, pure: the hashes an event moves and by how
much (the levels move by the tenant balance's token deltas, which `apply_ledger.lua` relies
on), and their names, all in the tenant's hash slot. No Redis needed."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from quotaflow.adapters.tenant_store import _NAME
from quotaflow.events.status import LedgerKind, LevelScope
from quotaflow.ledger import domain
from quotaflow.ledger.budgets import LevelBalance
from quotaflow.ledger.commands import StoredEvent
from quotaflow.ledger.domain import Balance
from quotaflow.ledger.level_projection import (
    balance_key,
    event_levels,
    level_delta,
    level_key,
    parse_level_key,
)

names = st.from_regex(_NAME, fullmatch=True)  # what tenants and teams may be called
AT = datetime(2026, 11, 5, tzinfo=UTC)


def event(kind: LedgerKind, amount: int = 100, released: int = 0, usd: int = 0,
          usd_released: int = 0, key_id: str | None = "k1",
          team_id: str | None = "ml") -> StoredEvent:
    return StoredEvent(7, "acme", 1, kind, "r1", "2026-11", amount, released, None, AT,
                       key_id, team_id, usd, usd_released)


@given(tenant=names, team=names, key_id=st.from_regex(r"[a-z0-9]{1,24}", fullmatch=True),
       period=st.sampled_from(["2026-11", "2026-11-05"]))
def test_every_levels_hash_names_its_level_back_and_lies_in_its_tenants_slot(
        tenant: str, team: str, key_id: str, period: str) -> None:
    levels = [(LevelScope.TENANT, tenant), (LevelScope.TEAM, f"{tenant}/{team}"),
              (LevelScope.KEY, key_id)]
    keys = [level_key(tenant, scope, lid, period) for scope, lid in levels]
    assert [parse_level_key(k) for k in keys] == [(s.value, lid, period) for s, lid in levels]
    assert len({key_slot(k.encode()) for k in [*keys, balance_key(tenant, period)]}) == 1


@pytest.mark.parametrize("kind", list(LedgerKind))
def test_a_levels_tokens_move_as_the_tenants_balance_does(kind: LedgerKind) -> None:
    ev = event(kind, amount=30, released=70, usd=90, usd_released=210)
    d = domain.apply(Balance(), ev.as_event())
    moved = level_delta(ev)
    assert (moved.reserved_tokens, moved.spent_tokens) == (d.reserved, d.spent)


def test_a_settlement_charges_its_money_and_returns_the_rest_at_each_level() -> None:
    ev = event(LedgerKind.RESERVATION_SETTLED, amount=30, released=70, usd=90,
               usd_released=210)
    assert level_delta(ev) == LevelBalance(-100, 30, -300, 90)
    assert level_delta(event(LedgerKind.TOKENS_RESERVED, usd=300)) == LevelBalance(100, 0,
                                                                                   300, 0)
    assert level_delta(event(LedgerKind.RESERVATION_EXPIRED, usd=300)) == LevelBalance(
        -100, 0, -300, 0)


def test_an_event_moves_its_tenant_and_the_key_and_team_it_names_and_a_grant_none() -> None:
    assert event_levels(event(LedgerKind.TOKENS_RESERVED)) == [
        (LevelScope.TENANT, "acme"), (LevelScope.KEY, "k1"), (LevelScope.TEAM, "acme/ml")]
    assert event_levels(event(LedgerKind.RESERVATION_RELEASED, team_id=None)) == [
        (LevelScope.TENANT, "acme"), (LevelScope.KEY, "k1")]
    assert event_levels(event(LedgerKind.TOKENS_RESERVED, key_id=None, team_id=None)) == [
        (LevelScope.TENANT, "acme")]
    assert event_levels(event(LedgerKind.QUOTA_GRANTED, key_id=None, team_id=None)) == []
    assert event_levels(event(LedgerKind.REQUEST_REJECTED)) == []
