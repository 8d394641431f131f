"""The PostgreSQL request store beyond the port's contract (tests/contract): a batch of final
records is one transaction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import errors as pg_errors

from quotaflow.adapters.request_store import PostgresRequestStore
from quotaflow.ports import FinalRecord, NewRequest, ReservedMark

HOUR = timedelta(hours=1)
DATA = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


def test_a_batch_with_a_record_that_fails_writes_none_of_it(
        conn: psycopg.Connection[Any]) -> None:
    store = PostgresRequestStore(conn)
    for rid in ("ok", "bad"):
        store.insert(NewRequest(rid, "acme", "k", "/app", rid, "h", "m", DATA,
                                datetime.now(UTC)))
    with pytest.raises(pg_errors.NumericValueOutOfRange):  # prompt_tokens is an integer
        store.finish([FinalRecord("ok", "failed", "oom", 0),
                      FinalRecord("bad", "completed", None, 1, prompt_tokens=2**40)])
    ok = store.fetch("acme", "ok")
    assert ok is not None and ok.status == "queued"
    store.finish([FinalRecord("ok", "failed", "oom", 0)])
    ok = store.fetch("acme", "ok")
    assert ok is not None and ok.status == "failed"


def test_each_call_commits_on_a_connection_that_is_not_autocommit(
        ledger_url: str, conn: psycopg.Connection[Any]) -> None:
    with psycopg.connect(ledger_url) as plain:
        store = PostgresRequestStore(plain)
        assert store.insert(NewRequest("r1", "acme", "k", "/app", "r1", "h", "m", DATA,
                                       datetime.now(UTC))).created
        store.mark_reserved([ReservedMark("r1", 69, 37)])
        assert store.fetch("acme", "r1") is not None
        store.note_redriven(["r1"])
        assert [r.redrives for r in store.open_since(datetime.now(UTC) + HOUR, 10)] == [1]
        assert plain.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        seen = conn.execute("SELECT status, reserved_tokens FROM requests "
                            "WHERE request_id = 'r1'").fetchone()
        assert seen == ("reserved", 69)
