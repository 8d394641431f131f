"""One billing clock: the ledger names a decision's period by its own now() in UTC, whatever
the TimeZone of the session or server, so admit's pre-check, the ledger and the audit agree;
and a request reserved before its tenant's period resets settles in the period it reserved in,
at every level, leaving the new period whole."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from quotaflow.adapters.budget_store import create_team, set_price
from quotaflow.adapters.tenant_store import create_key, create_tenant
from quotaflow.ledger import audit
from quotaflow.ledger.audit_levels import compare_levels
from quotaflow.ledger.budgets import parse_usd
from quotaflow.ledger.commands import ReleaseReservation, ReserveTokens, SettleReservation
from quotaflow.ledger.domain import Balance, Kind, period_of
from quotaflow.ledger.store import PostgresLedger

# Fourteen hours ahead of UTC and twelve behind: at any hour of the day, at least one of the
# two names another calendar day than UTC does, so this test bites whenever it runs.
FAR_ZONES = ("Etc/GMT-14", "Etc/GMT+12")


@pytest.mark.parametrize("zone", FAR_ZONES)
def test_a_daily_tenant_is_billed_to_the_utc_day_whatever_the_session_time_zone(
        conn: psycopg.Connection[Any], zone: str) -> None:
    create_tenant(conn, "early-bird", 1000, period="day")
    conn.execute(f"SET TIME ZONE '{zone}'")
    ledger = PostgresLedger(conn)
    (outcome,) = ledger.reserve([ReserveTokens("early-bird", "r-1", 10, "h")])
    utc_day = period_of("day", datetime.now(UTC))
    assert outcome.accepted
    assert outcome.period == utc_day
    assert ledger.current_period("early-bird") == utc_day
    grant = ledger.grant("early-bird", 5)
    assert grant.period == utc_day


@pytest.fixture
def set_ledger_now(conn: psycopg.Connection[Any]) -> Callable[[datetime], None]:
    """Sets the ledger's clock on `conn`. Every ledger function reads PostgreSQL's `now()`
    unqualified, so a `now()` in a schema searched before pg_catalog (named explicitly after
    it) shadows it for this session alone; it reads the time from a session setting."""
    conn.execute("CREATE SCHEMA IF NOT EXISTS qf_test_clock")
    conn.execute("CREATE OR REPLACE FUNCTION qf_test_clock.now() RETURNS timestamptz "
                 "LANGUAGE sql STABLE AS $$ SELECT current_setting('qf_test.now')::timestamptz $$")
    conn.execute("SET search_path = qf_test_clock, pg_catalog, public")

    def set_now(at: datetime) -> None:
        conn.execute("SELECT set_config('qf_test.now', %s, false)", (at.isoformat(),))
        row = conn.execute("SELECT now()").fetchone()
        assert row is not None and row[0] == at

    return set_now


def _levels(conn: psycopg.Connection[Any], period: str) -> dict[str, tuple[int, ...]]:
    rows = conn.execute("SELECT scope, reserved_tokens, spent_tokens, reserved_usd, spent_usd "
                        "FROM level_balances WHERE period = %s", (period,)).fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


def test_a_reset_mid_request_settles_and_releases_in_the_period_it_reserved_in(
        conn: psycopg.Connection[Any], set_ledger_now: Callable[[datetime], None]) -> None:
    set_ledger_now(datetime(2026, 12, 1, 4, 59, 30, tzinfo=UTC))  # 23:59:30 Nov 30 in New York
    create_tenant(conn, "acme", 1000, usd=parse_usd("1"), time_zone="America/New_York")
    create_team(conn, "acme", "ml", tokens=500)
    key = create_key(conn, "acme", team="ml", tokens=150).split("_")[1]
    set_price(conn, "m", parse_usd("10"), parse_usd("30"))  # $ per million tokens
    ledger = PostgresLedger(conn)
    a, b = ledger.reserve([ReserveTokens("acme", "a", 100, "ha", key, "m", 10),
                           ReserveTokens("acme", "b", 50, "hb", key, "m", 10)])
    assert a.accepted and b.accepted and a.period == b.period == "2026-11"

    set_ledger_now(datetime(2026, 12, 1, 5, 0, 30, tzinfo=UTC))  # December in New York now
    assert ledger.current_period("acme") == "2026-12"
    settled, released = ledger.end([SettleReservation("acme", "a", 30, "sa"),
                                    ReleaseReservation("acme", "b", "failed", "rb")])
    assert (settled.kind, settled.period) == (Kind.RESERVATION_SETTLED, "2026-11")
    assert (released.kind, released.period) == (Kind.RESERVATION_RELEASED, "2026-11")
    # 10 prompt tokens at $10/M and 20 completion tokens at $30/M: $0.000700, at every level
    assert _levels(conn, "2026-11") == dict.fromkeys(("key", "team", "tenant"), (0, 30, 0, 700))
    assert ledger.balance("acme", "2026-11") == Balance(1000, 0, 30)
    assert _levels(conn, "2026-12") == {} and ledger.balance("acme", "2026-12") == Balance()

    # December begins whole: the key's 150 tokens again, November's charge stays in November
    (fresh,) = ledger.reserve([ReserveTokens("acme", "c", 150, "hc", key, "m", 10)])
    assert fresh.accepted and fresh.period == "2026-12"
    assert _levels(conn, "2026-12")["key"][:2] == (150, 0)
    assert _levels(conn, "2026-11") == dict.fromkeys(("key", "team", "tenant"), (0, 30, 0, 700))
    replayed = audit.replay(conn)
    audit.compare_snapshot(replayed, conn, None, None)
    compare_levels(replayed, conn, None)
    assert replayed.findings == []
