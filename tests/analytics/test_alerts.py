"""Threshold alerts end to end on PostgreSQL and the session's Kafka broker: the PostgreSQL
ledger decides, the outbox relay publishes the ledger topic, `AlertConsumer` (its own consumer
group) evaluates it at every level (key, team, tenant) and unit (tokens, usd) and `send_due`
POSTs to a receiver here. A crossing is delivered once, with
a signature this file verifies by its own reading of the Standard Webhooks spec, across a
restart of the consumer, a replay of the topic from offset 0 and a republish by the relay; a
receiver that fails is retried with backoff under the same webhook-id until it answers 2xx; the
next period crosses again."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import pytest

from quotaflow.adapters import budget_store, kafka, tenant_store
from quotaflow.alerts.consumer import AlertConsumer, send_due
from quotaflow.alerts.store import PostgresAlertStore
from quotaflow.events.payloads import LedgerEntry
from quotaflow.events.status import LedgerKind
from quotaflow.ledger.budgets import parse_usd
from quotaflow.ledger.commands import ReserveTokens, SettleReservation
from quotaflow.ledger.outbox import LedgerRelay
from quotaflow.ledger.store import PostgresLedger
from quotaflow.ports import PublishTimeout
from quotaflow.settings import Settings
from tests.analytics.conftest import wait
from tests.unit.test_alert_rules import SECRET, verify

pytestmark = pytest.mark.slow


class Receiver:
    """An HTTP endpoint that answers `statuses` in turn (then 204) and keeps every request."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.seen: list[tuple[dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.seen.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(outer.statuses.pop(0) if outer.statuses else 204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


@pytest.fixture
def alerts_conn(conn: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
    conn.execute("TRUNCATE alert_offsets, alert_streams, alert_levels")  # tenants' cascade
    yield conn  # clears the alerts and their deliveries


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


def spend(conn: psycopg.Connection[Any], tenant: str, rid: str, tokens: int) -> None:
    ledger = PostgresLedger(conn)
    ledger.reserve([ReserveTokens(tenant, rid, tokens, f"r-{rid}")])
    ledger.end([SettleReservation(tenant, rid, tokens, f"s-{rid}")])


def deliveries(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT webhook_id, attempts, delivered_at IS NOT NULL "
                        "FROM alert_deliveries ORDER BY webhook_id").fetchall()


def test_a_crossing_is_delivered_once_signed_across_a_restart_a_replay_and_a_republish(
        alerts_conn: psycopg.Connection[Any], settings: Settings, receiver: Receiver) -> None:
    conn = alerts_conn
    tenant_store.create_tenant(conn, "acme", 1000)
    store = PostgresAlertStore(conn)
    store.add("acme", "tenant", "acme", 50, receiver.url, SECRET)
    spend(conn, "acme", "r1", 400)
    spend(conn, "acme", "r2", 200)  # 600 of 1000: past 50 %
    spend(conn, "acme", "r3", 100)
    relay = LedgerRelay(PostgresLedger(conn), kafka.make_producer(settings),
                        settings.topic("ledger"))
    publish(relay)
    events = int(conn.execute("SELECT count(*) FROM ledger_events").fetchone()[0])  # type: ignore[index]

    def consume_all() -> None:
        consume(settings, store, events)

    consume_all()
    assert len(receiver.seen) == 1
    headers, body = receiver.seen[0]
    assert verify(SECRET, headers, body)
    event = json.loads(body)
    assert event["type"] == "dev.quotaflow.budget.threshold"
    assert event["data"] == {"scope": "tenant", "id": "acme", "period": event["data"]["period"],
                             "unit": "tokens", "threshold_percent": 50, "spent": 600,
                             "limit": 1000}

    consume_all()  # a restart: the same group, from its stored offsets
    conn.execute("DELETE FROM alert_offsets")  # a replay from offset 0
    consume_all()
    conn.execute("UPDATE outbox_cursors SET seq = 0")
    publish(relay)  # the relay publishes every entry again
    events *= 2
    consume_all()
    assert len(receiver.seen) == 1
    assert [d[2] for d in deliveries(conn)] == [True]


def consume(settings: Settings, store: PostgresAlertStore, events: int) -> None:
    """Run the alerts consumer until it has read `events` records, then send what is due."""
    consumer = AlertConsumer(settings, store, poll_s=0.2)
    try:
        wait("the ledger topic",
             lambda: (consumer.poll_once(), stored(store.conn))[1] >= events)
    finally:
        consumer.close()
    send_due(store, 0.05)


def test_a_teams_money_and_a_keys_tokens_each_cross_once_signed(
        alerts_conn: psycopg.Connection[Any], settings: Settings, receiver: Receiver) -> None:
    conn = alerts_conn
    tenant_store.create_tenant(conn, "acme", 1_000_000)
    budget_store.create_team(conn, "acme", "ml", usd=parse_usd("0.02"))
    key = tenant_store.create_key(conn, "acme", team="ml", tokens=500).split("_")[1]
    budget_store.set_price(conn, "smollm2", parse_usd("10"), parse_usd("30"))
    store = PostgresAlertStore(conn)
    store.add("acme", "team", "ml", 50, receiver.url, SECRET)
    store.add("acme", "key", key, 80, receiver.url, SECRET)
    ledger = PostgresLedger(conn)
    for i in range(5):  # 100 tokens, 20 in at $10/M and 80 out at $30/M: $0.0026 each
        ledger.reserve([ReserveTokens("acme", f"r{i}", 100, f"h{i}", key, "smollm2", 20)])
        ledger.end([SettleReservation("acme", f"r{i}", 100, f"s{i}")])
    publish(LedgerRelay(ledger, kafka.make_producer(settings), settings.topic("ledger")))
    events = int(conn.execute("SELECT count(*) FROM ledger_events").fetchone()[0])  # type: ignore[index]
    consume(settings, store, events)
    conn.execute("DELETE FROM alert_offsets")  # a replay from offset 0 sends nothing again
    consume(settings, store, events)

    assert all(verify(SECRET, h, b) for h, b in receiver.seen)
    data = sorted((json.loads(b)["data"] for _, b in receiver.seen), key=lambda d: d["scope"])
    period = data[0]["period"]
    assert data == [
        {"scope": "key", "id": key, "period": period, "unit": "tokens",
         "threshold_percent": 80, "spent": 400, "limit": 500},
        {"scope": "team", "id": "ml", "period": period, "unit": "usd",
         "threshold_percent": 50, "spent": "0.010400", "limit": "0.020000"}]


def publish(relay: LedgerRelay) -> None:
    """Publish the ledger, again while a broker just started is not yet taking records."""
    deadline = time.monotonic() + 60
    while True:
        try:
            relay.publish_pending()
            return
        except PublishTimeout:
            if time.monotonic() > deadline:
                raise


def stored(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT coalesce(sum(next_offset), 0) FROM alert_offsets").fetchone()
    return int(row[0]) if row else 0


def entry(seq: int, kind: LedgerKind, amount: int, period: str) -> LedgerEntry:
    from datetime import UTC, datetime

    return LedgerEntry(seq, "acme", seq, kind, None if kind is LedgerKind.QUOTA_GRANTED
                       else f"r{seq}", period, amount, 0, datetime(2026, 11, 29, tzinfo=UTC))


def test_a_failing_receiver_is_retried_with_the_same_webhook_id_until_it_answers_2xx(
        alerts_conn: psycopg.Connection[Any]) -> None:
    from datetime import UTC, datetime

    conn = alerts_conn
    tenant_store.create_tenant(conn, "acme", 0)
    receiver = Receiver([500, 503, 429])
    try:
        store = PostgresAlertStore(conn)
        store.add("acme", "tenant", "acme", 80, receiver.url, SECRET)
        store.apply("g", [entry(1, LedgerKind.QUOTA_GRANTED, 100, "2026-11"),
                          entry(2, LedgerKind.RESERVATION_SETTLED, 90, "2026-11")],
                    {}, datetime.now(UTC))
        wait("a 2xx", lambda: send_due(store, 0.05) == 1 or len(receiver.seen) > 4, 30)
        assert len(receiver.seen) == 4
        ids = {h["webhook-id"] for h, _ in receiver.seen}
        assert len(ids) == 1 and len({b for _, b in receiver.seen}) == 1
        assert all(verify(SECRET, h, b) for h, b in receiver.seen)
        assert deliveries(conn) == [(ids.pop(), 4, True)]
        assert send_due(store, 0.05) == 0  # delivered: never again
    finally:
        receiver.server.shutdown()


def test_the_next_period_crosses_again(alerts_conn: psycopg.Connection[Any],
                                       receiver: Receiver) -> None:
    from datetime import UTC, datetime

    conn = alerts_conn
    tenant_store.create_tenant(conn, "acme", 0)
    store = PostgresAlertStore(conn)
    store.add("acme", "tenant", "acme", 80, receiver.url, SECRET)
    history = [entry(1, LedgerKind.QUOTA_GRANTED, 100, "2026-11"),
               entry(2, LedgerKind.RESERVATION_SETTLED, 85, "2026-11"),
               entry(3, LedgerKind.RESERVATION_SETTLED, 10, "2026-11"),
               entry(4, LedgerKind.QUOTA_GRANTED, 100, "2026-12"),
               entry(5, LedgerKind.RESERVATION_SETTLED, 79, "2026-12")]
    assert store.apply("g", history, {}, datetime.now(UTC)) == 1
    assert store.apply("g", [entry(6, LedgerKind.RESERVATION_SETTLED, 1, "2026-12")], {},
                       datetime.now(UTC)) == 1
    assert store.apply("g", history, {}, datetime.now(UTC)) == 0  # seen: skipped
    send_due(store, 0.05)
    periods = sorted(json.loads(b)["data"]["period"] for _, b in receiver.seen)
    assert periods == ["2026-11", "2026-12"]


def test_a_store_on_a_reopening_connection_outlives_a_terminated_one(
        alerts_conn: psycopg.Connection[Any], analytics_url: str, receiver: Receiver) -> None:
    # `alerts run`'s stores: a database that drops them (a failover, a `pg` chaos fault)
    # costs one failed call, not the process's every call after.
    from datetime import UTC, datetime

    from quotaflow.adapters.postgres import Reconnecting

    tenant_store.create_tenant(alerts_conn, "acme", 0)
    holder = Reconnecting(analytics_url)
    try:
        store = PostgresAlertStore(holder)
        store.add("acme", "tenant", "acme", 80, receiver.url, SECRET)
        pid = holder().info.backend_pid
        alerts_conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        wait("the backend gone", lambda: alerts_conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() == (0,),
            10)
        # A loss the holder may see only by a failed call: the next call reopens.
        with contextlib.suppress(psycopg.OperationalError):
            store.of_tenant("acme")
        store.apply("g", [entry(1, LedgerKind.QUOTA_GRANTED, 100, "2026-11"),
                          entry(2, LedgerKind.RESERVATION_SETTLED, 90, "2026-11")],
                    {}, datetime.now(UTC))
        assert send_due(store, 0.05) == 1
        assert holder.reconnects == 1 and holder().info.backend_pid != pid
    finally:
        holder.close()
