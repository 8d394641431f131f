"""The `Clock` contract, run against the fixed clock (`memory`), the system clock and the
ledger's clock read from PostgreSQL (database `qf_test_contract_clock`): `now()` is aware UTC,
never goes backwards, and the live clocks tell the machine's time. `-k memory` runs the fixed
clock alone, with no services."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import psycopg
import pytest

from quotaflow.adapters.clock import FixedClock, SystemClock
from quotaflow.adapters.postgres_clock import PostgresClock
from quotaflow.ports import Clock

DATABASE = "qf_test_contract_clock"
# Short, so that a run of calls crosses many re-reads of the database and the local
# carrying-forward in between: the two must join without a step back.
REFRESH_S = 0.01


@pytest.fixture(scope="module")
def conn() -> Iterator[psycopg.Connection[Any]]:
    from tests.services import fresh_database

    with psycopg.connect(fresh_database(DATABASE), autocommit=True) as c:
        yield c


def make_clock(kind: str, request: pytest.FixtureRequest) -> Clock:
    if kind == "memory":
        return FixedClock()
    if kind == "system":
        return SystemClock()
    connection: psycopg.Connection[Any] = request.getfixturevalue("conn")
    return PostgresClock(lambda: connection, refresh_s=REFRESH_S)


@pytest.fixture(params=["memory", "system", "postgres"])
def clock(request: pytest.FixtureRequest) -> Clock:
    return make_clock(request.param, request)


@pytest.fixture(params=["system", "postgres"])
def live_clock(request: pytest.FixtureRequest) -> Clock:
    return make_clock(request.param, request)


def test_now_is_timezone_aware_utc(clock: Clock) -> None:
    at = clock.now()
    assert at.tzinfo is not None
    assert at.utcoffset() == timedelta(0)


def test_now_never_goes_backwards_across_calls(clock: Clock) -> None:
    readings = [clock.now()]
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:
        readings.append(clock.now())
    backwards = [a - b for a, b in pairwise(readings) if b < a]
    assert not backwards, (f"{len(backwards)} of {len(readings)} readings went backwards, "
                           f"by up to {max(backwards)}")


def test_a_live_clock_tells_the_machines_time(live_clock: Clock) -> None:
    for _ in range(3):
        before = datetime.now(UTC)
        at = live_clock.now()
        after = datetime.now(UTC)
        assert before - timedelta(seconds=2) <= at <= after + timedelta(seconds=2)
        time.sleep(REFRESH_S * 2)
