"""A real PostgreSQL database (`qf_test_analytics`) and the session's Kafka broker; each test
gets its own topic prefix, so topics never carry another test's records. Histories are made
the way production makes them: the PostgreSQL ledger decides, the outbox relay publishes the
ledger topic, and `completed` events go through the Kafka publisher."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from quotaflow.adapters import kafka, tenant_store
from quotaflow.adapters import postgres as db
from quotaflow.adapters.kafka import KafkaPublisher
from quotaflow.events.envelope import Envelope
from quotaflow.events.payloads import Completed
from quotaflow.ledger.commands import ReserveTokens, SettleReservation
from quotaflow.ledger.outbox import LedgerRelay
from quotaflow.ledger.store import PostgresLedger
from quotaflow.settings import Settings
from tests.conftest import REPO
from tests.services import fresh_database

_PREFIXES = itertools.count()
MODELS = ("m-small", "m-large")


@pytest.fixture(scope="session")
def analytics_url() -> str:
    return fresh_database("qf_test_analytics")


@pytest.fixture
def conn(analytics_url: str) -> Iterator[psycopg.Connection[Any]]:
    with db.connect(analytics_url, autocommit=True) as c:
        c.execute("TRUNCATE tenants, api_keys, ledger_streams, ledger_events, reservations, "
                  "balances, ledger_commands, requests, usage_rollups, usage_offsets, "
                  "usage_streams, usage_outcomes, level_balances, prices CASCADE")
        c.execute("UPDATE outbox_cursors SET seq = 0")
        yield c


@pytest.fixture
def settings(kafka_bootstrap: str, analytics_url: str) -> Settings:
    s = Settings(kafka_bootstrap=kafka_bootstrap, postgres_url=analytics_url,
                 topic_prefix=f"qfa{os.getpid()}x{next(_PREFIXES)}.",
                 consumer_group_prefix=f"qfa{os.getpid()}-", kafka_session_timeout_ms=2000,
                 kafka_fetch_wait_max_ms=20)
    kafka.create_topics(s)
    return s


@dataclass
class History:
    """What a history put on the topics."""

    keys: dict[str, str]  # tenant -> API key
    completed: list[Completed]

    def tokens(self, tenant: str) -> tuple[int, int]:
        done = [c for c in self.completed if c.tenant == tenant]
        return sum(c.prompt_tokens for c in done), sum(c.completion_tokens for c in done)


def make_history(conn: psycopg.Connection[Any], settings: Settings, requests: int,
                 tenants: tuple[str, ...] = ("acme", "beta")) -> History:
    """Tenants with request records (model and key), reservations, settlements of most and
    rejections of some, the ledger topic published by the relay, completed events produced."""
    keys = {t: tenant_store.create_tenant(conn, t, 10 * requests * 100) for t in tenants}
    key_ids = {t: conn.execute("SELECT key_id FROM api_keys WHERE tenant_id = %s",
                               (t,)).fetchone()[0] for t in tenants}  # type: ignore[index]
    ledger = PostgresLedger(conn)
    completed: list[Completed] = []
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO requests (request_id, tenant_id, key_id, source, ce_id, payload_hash, "
            "status, model) VALUES (%s, %s, %s, '/t', %s, 'h', 'queued', %s)",
            [(f"{t}-{i}", t, key_ids[t], f"{t}-{i}", MODELS[i % 2])
             for t in tenants for i in range(requests)])
    for t in tenants:
        for start in range(0, requests, 500):
            ids = range(start, min(start + 500, requests))
            ledger.reserve([ReserveTokens(t, f"{t}-{i}", 100 if i % 7 else 10**9, "h")
                            for i in ids])
            done = [i for i in ids if i % 7 and i % 5]
            ledger.end([SettleReservation(t, f"{t}-{i}", 30 + i % 50, "s") for i in done])
            completed += [Completed(f"{t}-{i}", t, 100, "x", 20 + i % 10, 10 + i % 50 - i % 10,
                                    MODELS[i % 2], "v1", 5.0 + i % 3) for i in done]
    relay = LedgerRelay(PostgresLedger(conn), kafka.make_producer(settings),
                        settings.topic("ledger"))
    relay.publish_pending()
    publisher = KafkaPublisher.from_settings(settings, timeout_s=60)
    publisher.publish([Envelope.of(c, "infer") for c in completed])
    publisher.close()
    return History(keys, completed)


def ledger_totals(conn: psycopg.Connection[Any]) -> dict[str, tuple[int, ...]]:
    """Per tenant: requests decided, rejected, tokens reserved and charged, by the ledger."""
    rows = conn.execute(
        "SELECT tenant_id, count(*) FILTER (WHERE kind IN ('TokensReserved', 'RequestRejected')),"
        " count(*) FILTER (WHERE kind = 'RequestRejected'),"
        " coalesce(sum(amount) FILTER (WHERE kind = 'TokensReserved'), 0),"
        " coalesce(sum(amount) FILTER (WHERE kind = 'ReservationSettled'), 0)"
        " FROM ledger_events GROUP BY 1").fetchall()
    return {r[0]: tuple(int(v) for v in r[1:]) for r in rows}


def rollup_totals(conn: psycopg.Connection[Any]) -> dict[str, tuple[int, ...]]:
    rows = conn.execute("SELECT tenant_id, sum(requests), sum(rejected), sum(reserved_tokens), "
                        "sum(charged_tokens) FROM usage_rollups GROUP BY 1").fetchall()
    return {r[0]: tuple(int(v) for v in r[1:]) for r in rows}


def snapshot(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT * FROM usage_rollups ORDER BY tenant_id, minute, model, "
                        "key_id").fetchall()


def quotaflow(settings: Settings, *args: str) -> subprocess.Popen[bytes]:
    """`quotaflow ARGS` as a child process on `settings`, its output in a pipe."""
    env = {**os.environ, **settings.as_env(), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "quotaflow", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def wait(what: str, done: Callable[[], bool], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
