"""The ledger's clock as admit reads it: PostgreSQL's `now()`, read once per refresh interval
and carried forward locally in between (database `qf_test_admit_clock`)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, timedelta
from typing import Any

import psycopg
import pytest

from quotaflow.adapters.postgres_clock import PostgresClock
from tests.services import fresh_database


class Counted:
    """The connection, counting the statements run on it."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn, self.statements = conn, 0

    def __call__(self) -> psycopg.Connection[Any]:
        self.statements += 1
        return self.conn


@pytest.fixture(scope="module")
def conn() -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(fresh_database("qf_test_admit_clock"), autocommit=True) as c:
        yield c


def test_the_clock_reads_the_databases_now_in_utc(conn: psycopg.Connection[Any]) -> None:
    at = PostgresClock(lambda: conn).now()
    row = conn.execute("SELECT now()").fetchone()
    assert row is not None
    assert abs(row[0] - at) < timedelta(seconds=1)
    assert at.tzinfo == UTC


def test_the_database_is_read_once_per_refresh_and_time_carried_forward_between(
        conn: psycopg.Connection[Any]) -> None:
    ticks, counted = [1000.0], Counted(conn)
    clock = PostgresClock(counted, refresh_s=5.0, monotonic=lambda: ticks[0])
    first = clock.now()
    ticks[0] += 2.5
    assert clock.now() - first == timedelta(seconds=2.5)
    assert counted.statements == 1
    ticks[0] += 2.5
    clock.now()
    assert counted.statements == 2
