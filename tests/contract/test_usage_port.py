"""The `UsageStore` contract, run against `MemoryUsageStore` and `PostgresUsageStore`
(database `qf_test_analytics_contract`): the same batches give the same rows, a replayed or
re-published batch adds nothing, offsets are kept per consumer and never move back, and a
reset forgets everything. `-k memory` runs the in-memory store alone, with no services."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from quotaflow.analytics.memory import MemoryUsageStore
from quotaflow.analytics.query import UsageQuery
from quotaflow.analytics.rollup import Batch, Outcome
from quotaflow.analytics.store import UsageStore
from quotaflow.events.payloads import LedgerEntry

AT = datetime(2026, 11, 29, 23, 59, 30, tzinfo=UTC)
REQUESTS = {"r1": ("m1", "k1"), "r2": ("m2", "k1"), "r3": ("m1", "k2")}
LEDGER = "quotaflow.ledger"


@pytest.fixture(params=["memory", "postgres"])
def store(request: pytest.FixtureRequest) -> Iterator[UsageStore]:
    if request.param == "memory":
        yield MemoryUsageStore(dict(REQUESTS))
        return
    from quotaflow.adapters import postgres as db
    from quotaflow.analytics.store import PostgresUsageStore
    from tests.services import fresh_database

    with db.connect(fresh_database("qf_test_analytics_contract"), autocommit=True) as conn:
        for rid, (model, key) in REQUESTS.items():
            conn.execute("INSERT INTO requests (request_id, tenant_id, key_id, source, ce_id, "
                         "payload_hash, status, model) VALUES (%s, 'acme', %s, '/t', %s, 'h', "
                         "'queued', %s)", (rid, key, rid, model))
        yield PostgresUsageStore(conn)


def entry(version: int, kind: str, amount: int, request_id: str | None, released: int = 0,
          at: datetime = AT, tenant: str = "acme") -> LedgerEntry:
    return LedgerEntry(version, tenant, version, kind, request_id, "2026-11", amount, released,
                       at)


def batches() -> list[Batch]:
    nxt = AT + timedelta(minutes=1)  # the next day, in UTC
    return [
        Batch("g", [entry(1, "QuotaGranted", 500, None), entry(2, "TokensReserved", 60, "r1"),
                    entry(3, "TokensReserved", 60, "r2")],
              [Outcome("completed", "r1", "acme", AT, 12, 8, 40.0)],
              {(LEDGER, 0): 3, ("quotaflow.completed", 2): 1}),
        Batch("g", [entry(4, "ReservationSettled", 20, "r1", 40, nxt),
                    entry(5, "ReservationReleased", 60, "r2", at=nxt),
                    entry(6, "RequestRejected", 999, "r3", at=nxt)],
              [Outcome("failed", "r2", "acme", nxt), Outcome("completed", "unknown", "acme",
                                                             nxt, 1, 1, 2.0)],
              {(LEDGER, 0): 6, ("quotaflow.failed", 2): 1, ("quotaflow.completed", 2): 2}),
    ]


def test_batches_roll_up_into_the_same_rows_by_day_and_model(store: UsageStore) -> None:
    for b in batches():
        store.apply(b)
    rows = store.usage(UsageQuery("acme", "day", "model"))
    got = [(r["start"], r["model"], r["requests"], r["rejected"], r["completed"], r["failed"],
            r["granted_tokens"], r["reserved_tokens"], r["charged_tokens"], r["released_tokens"],
            r["prompt_tokens"], r["completion_tokens"], r["avg_latency_ms"]) for r in rows]
    assert got == [
        ("2026-11-29T00:00:00Z", None, 0, 0, 0, 0, 500, 0, 0, 0, 0, 0, None),
        ("2026-11-29T00:00:00Z", "m1", 1, 0, 1, 0, 0, 60, 0, 0, 12, 8, 40.0),
        ("2026-11-29T00:00:00Z", "m2", 1, 0, 0, 0, 0, 60, 0, 0, 0, 0, None),
        ("2026-11-30T00:00:00Z", None, 0, 0, 1, 0, 0, 0, 0, 0, 1, 1, 2.0),
        ("2026-11-30T00:00:00Z", "m1", 1, 1, 0, 0, 0, 0, 20, 40, 0, 0, None),
        ("2026-11-30T00:00:00Z", "m2", 0, 0, 0, 1, 0, 0, 0, 60, 0, 0, None)]


def test_the_time_range_and_the_key_grouping_select_minutes(store: UsageStore) -> None:
    for b in batches():
        store.apply(b)
    q = UsageQuery.parse({"tenant": "acme", "by": "minute", "group": "key",
                          "from": "2026-11-30T00:00:00Z", "to": "2026-11-30T00:01:00Z"})
    assert [(r["key"], r["charged_tokens"], r["requests"]) for r in store.usage(q)] == \
        [(None, 0, 0), ("k1", 20, 0), ("k2", 0, 1)]
    assert store.usage(UsageQuery("nobody")) == []


def test_a_replayed_batch_adds_nothing_but_moves_nothing_back(store: UsageStore) -> None:
    for b in batches():
        store.apply(b)
    before = store.usage(UsageQuery(by="minute", group="key"))
    replay = Batch("new-group", [e for b in batches() for e in b.ledger],
                   [o for b in batches() for o in b.outcomes], {(LEDGER, 0): 6})
    applied = store.apply(replay)
    assert (applied.ledger, applied.outcomes, applied.duplicates) == (0, 0, 9)
    assert store.usage(UsageQuery(by="minute", group="key")) == before
    store.apply(batches()[0])
    assert store.offsets("g", [(LEDGER, 0), ("quotaflow.completed", 2), (LEDGER, 1)]) == \
        {(LEDGER, 0): 6, ("quotaflow.completed", 2): 2}
    assert store.offsets("new-group", [(LEDGER, 0)]) == {(LEDGER, 0): 6}


def test_reset_forgets_rows_versions_outcomes_and_offsets(store: UsageStore) -> None:
    for b in batches():
        store.apply(b)
    store.reset()
    assert store.usage(UsageQuery()) == []
    assert store.offsets("g", [(LEDGER, 0)]) == {}
    applied = store.apply(batches()[0])
    assert (applied.ledger, applied.outcomes) == (3, 1)
