"""One billing clock: the ledger names a decision's period by its own now() in UTC, whatever
the TimeZone of the session or server, so admit's pre-check, the ledger and the audit agree."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from quotaflow.adapters.tenant_store import create_tenant
from quotaflow.ledger.commands import ReserveTokens
from quotaflow.ledger.domain import period_of
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
