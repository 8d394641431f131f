"""The statements every request runs on `requests` find their rows by key, whatever the size of
the table, also under a plan the connection cached while the table was empty.

A server keeps its connections for hours: psycopg prepares a statement after a few runs, and
PostgreSQL then keeps one generic plan for it until the table is next analyzed. A plan made at
start, on an empty table, that scans the whole table costs more with every request stored
(admit's batched insert did: 2 ms a batch at 5,000 rows, in the first minute of every bench).
So each adapter call runs once on an empty table never analyzed, on a connection that prepares
on first use and keeps the generic plan; the table is filled with autovacuum off (nothing
re-plans); then the same calls run again and PostgreSQL's `auto_explain` reports the plan of
every statement they ran."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from quotaflow.adapters.request_store import PostgresRequestStore
from quotaflow.analytics.store import PostgresUsageStore
from quotaflow.ports import FinalRecord, NewRequest, ReservedMark
from tests.services import fresh_database

ROWS = 20_000
DATA = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


@pytest.fixture
def plans() -> Iterator[tuple[psycopg.Connection[Any], list[str]]]:
    """A connection that prepares every statement on its first run and keeps its generic plan,
    and the plans `auto_explain` reported on it."""
    with psycopg.connect(fresh_database("qf_test_hot_plans"), autocommit=True,
                         prepare_threshold=0) as conn:
        conn.execute("ALTER TABLE requests SET (autovacuum_enabled = false)")
        reported: list[str] = []
        conn.add_notice_handler(lambda d: reported.append(d.message_primary or ""))
        conn.execute("LOAD 'auto_explain'")
        for setting in ("plan_cache_mode = force_generic_plan", "client_min_messages = log",
                        "auto_explain.log_min_duration = 0"):
            conn.execute(f"SET {setting}")
        yield conn, reported


def _calls(conn: psycopg.Connection[Any]) -> dict[str, Callable[[], object]]:
    store = PostgresRequestStore(conn)

    def new(rid: str) -> NewRequest:
        return NewRequest(rid, "acme", "k", "/app", rid, "h", "m", DATA, datetime.now(UTC))

    store.insert(new("r1"))  # so that the batched insert always has one already stored
    return {
        "admit's batched insert, a resend in it": lambda: store.insert_many(
            [new("a1"), new("r1"), new("a1")]),
        "admit's read of one stored request": lambda: store.find("r2"),
        "reserve's mark": lambda: store.mark_reserved([ReservedMark("r3", 10, 5)]),
        "record's final writes": lambda: store.finish([FinalRecord("r4", "completed", None, 3)]),
        "the reconciler's re-drive count": lambda: store.note_redriven(["r5", "r6"]),
        "the roll-ups' attribution": lambda: PostgresUsageStore._attribution(conn, {"r7"}),
    }


def test_the_hot_statements_keep_probing_by_key_as_the_table_grows(
        plans: tuple[psycopg.Connection[Any], list[str]]) -> None:
    conn, reported = plans
    calls = _calls(conn)
    for call in calls.values():  # on the empty table: each generic plan is made now
        call()
    conn.execute(
        "INSERT INTO requests (request_id, tenant_id, key_id, source, ce_id, payload_hash, "
        "status, model, payload) SELECT 'x' || g, 'acme', 'k', '/app', 'x' || g, 'h', "
        "'queued', 'm', '{}' FROM generate_series(1, %s) AS g", (ROWS,))
    scans = {}
    for name, call in calls.items():
        reported.clear()
        call()
        assert any("Query Text" in plan for plan in reported), f"{name}: no plan reported"
        scans[name] = [p for p in reported if "Seq Scan on requests" in p]
    assert {name: found for name, found in scans.items() if found} == {}
