"""The roll-ups equal the ledger exactly: after `quotaflow analytics run` is SIGKILLed in the
middle of the topics and restarted, after the relay published the ledger twice, after another
consumer group replays every topic from its start, and after a reset rebuilds them."""

from __future__ import annotations

import signal
from typing import Any

import psycopg
import pytest

from quotaflow.adapters import kafka
from quotaflow.analytics.check import check_rollups
from quotaflow.ledger.outbox import LedgerRelay
from quotaflow.ledger.store import PostgresLedger
from quotaflow.settings import Settings
from tests.analytics.conftest import (
    ledger_totals,
    make_history,
    quotaflow,
    rollup_totals,
    snapshot,
    wait,
)

pytestmark = pytest.mark.slow


def stored_progress(conn: psycopg.Connection[Any], group: str) -> int:
    row = conn.execute("SELECT coalesce(sum(next_offset), 0) FROM usage_offsets "
                       "WHERE consumer = %s", (group,)).fetchone()
    return int(row[0]) if row else 0


def caught_up(conn: psycopg.Connection[Any], completed: int) -> bool:
    outcomes = conn.execute("SELECT count(*) FROM usage_outcomes").fetchone()
    return check_rollups(conn).pending == 0 and bool(outcomes) and outcomes[0] == completed


def test_rollups_equal_the_ledger_after_a_kill_mid_stream_a_republish_and_a_replay(
        conn: psycopg.Connection[Any], settings: Settings) -> None:
    history = make_history(conn, settings, requests=2000)
    ledger_events = int(conn.execute("SELECT count(*) FROM ledger_events").fetchone()[0])  # type: ignore[index]
    # The relay publishes at least once: it crashed before moving its cursor and published
    # the first half again.
    conn.execute("UPDATE outbox_cursors SET seq = 0")
    LedgerRelay(PostgresLedger(conn), kafka.make_producer(settings),
                settings.topic("ledger")).publish_pending(batch=ledger_events // 2)
    on_topics = 2 * ledger_events + len(history.completed)
    group = settings.consumer_group_prefix + "analytics"

    first = quotaflow(settings, "analytics", "run", "--batch", "40")
    try:
        wait("the consumer to store its first offsets", lambda: stored_progress(conn, group) > 0)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        first.kill()
    killed_at = stored_progress(conn, group)
    assert 0 < killed_at < on_topics, "the kill did not land mid-stream"
    assert check_rollups(conn).ok  # a killed batch left nothing half applied

    second = quotaflow(settings, "analytics", "run", "--batch", "500")
    try:
        wait("the restarted consumer to catch up",
             lambda: caught_up(conn, len(history.completed)), 120)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)

    result = check_rollups(conn)
    assert result.ok, result.findings
    assert result.compared == ledger_events
    assert rollup_totals(conn) == ledger_totals(conn)
    for tenant in history.keys:
        row = conn.execute("SELECT sum(prompt_tokens), sum(completion_tokens), sum(completed) "
                           "FROM usage_rollups WHERE tenant_id = %s", (tenant,)).fetchone()
        assert row is not None
        done = [c for c in history.completed if c.tenant == tenant]
        assert (int(row[0]), int(row[1]), int(row[2])) == (*history.tokens(tenant), len(done))
    before = snapshot(conn)

    replay = quotaflow(settings, "analytics", "run", "--group", "replay-from-start")
    try:
        wait("the replay to read every record",
             lambda: stored_progress(conn, "replay-from-start") >= on_topics, 120)
    finally:
        replay.send_signal(signal.SIGTERM)
        replay.wait(30)
    assert snapshot(conn) == before

    reset = quotaflow(settings, "analytics", "reset")
    assert reset.wait(30) == 0
    assert snapshot(conn) == []
    rebuild = quotaflow(settings, "analytics", "run")
    try:
        wait("the rebuild", lambda: caught_up(conn, len(history.completed)), 120)
    finally:
        rebuild.send_signal(signal.SIGTERM)
        rebuild.wait(30)
    assert snapshot(conn) == before
