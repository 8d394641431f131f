"""The reserve step's Kafka loop, wired to real PostgreSQL, Redis and Kafka, keeps working
across outages: its PostgreSQL connections terminated (`pg_terminate_backend`, as a failover
does) and Redis flushed mid-stream. Every record is handled, none is dead-lettered, and the
projection ends equal to the ledger. Database `qf_test_runtime_outages`, Redis db index 4."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import psycopg
import pytest
import redis

from quotaflow.adapters import kafka
from quotaflow.adapters import postgres as db
from quotaflow.adapters import tenant_store as tenants
from quotaflow.events.envelope import Envelope, from_kafka, to_kafka
from quotaflow.events.payloads import Reserved
from quotaflow.ledger.projection import GENERATION_KEY, RedisProjection
from quotaflow.ledger.store import PostgresLedger
from quotaflow.runtime.faults import INFRA_RETRIES
from quotaflow.runtime.steps import load_step
from quotaflow.runtime.worker import KafkaWorker
from quotaflow.settings import Settings
from tests.runtime.test_worker import drain
from tests.services import fresh_database, redis_base
from tests.unit.fakes import estimated

REDIS_DB = 4


@pytest.fixture(scope="module")
def url() -> str:
    return fresh_database("qf_test_runtime_outages")


@pytest.fixture
def settings(url: str, kafka_bootstrap: str) -> Iterator[Settings]:
    prefix = f"o{uuid.uuid4().hex[:6]}."
    s = replace(Settings(), kafka_bootstrap=kafka_bootstrap, topic_prefix=prefix,
                consumer_group_prefix=prefix, kafka_session_timeout_ms=2000,
                postgres_url=url, redis_url=f"{redis_base()}/{REDIS_DB}",
                retry_backoff_max_s=1, handler_retries=2)
    redis.Redis.from_url(s.redis_url).flushdb()
    kafka.create_topics(s)
    yield s


def terminate_backends(url: str) -> int:
    """Terminate every other connection to the database, as a failover would, and wait for
    each backend to have exited (its goodbye sent)."""
    with db.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                            ).fetchall()
    return sum(1 for (ok,) in rows if ok)


def send(settings: Settings, tenant: str, ids: list[str]) -> None:
    producer = kafka.make_producer(settings)
    for rid in ids:
        env = Envelope.of(estimated(rid, 10, tenant=tenant), "estimate")
        kafka.produce(producer, settings.topic("estimated"), to_kafka(env))
    kafka.flush(producer)


class Running:
    """The reserve step's loop in a thread, as `quotaflow run reserve` runs it."""

    def __init__(self, settings: Settings) -> None:
        self.worker = KafkaWorker(load_step("reserve"), settings)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.worker.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)


def reserved_ids(settings: Settings, want: int) -> set[str]:
    got = drain(settings.kafka_bootstrap, settings.topic("reserved"), want, timeout_s=60)
    return {p.request_id for m in got
            if isinstance(p := from_kafka(m.headers(), m.key(), m.value()).payload, Reserved)}


def retries() -> float:
    return sum(s.value for metric in INFRA_RETRIES.collect() for s in metric.samples
               if s.name.endswith("_total") and s.labels.get("step") == "reserve")


def make_tenant(settings: Settings) -> str:
    name = f"t{uuid.uuid4().hex[:8]}"
    with db.connect(settings.postgres_url, autocommit=True) as conn:
        tenants.create_tenant(conn, name, 10**6)
    return name


def ledger_reserved(conn: psycopg.Connection[Any], tenant: str) -> int:
    row = conn.execute("SELECT count(*) FROM ledger_events WHERE tenant_id = %s "
                       "AND kind = 'TokensReserved'", (tenant,)).fetchone()
    return int(row[0]) if row else 0


@pytest.mark.parametrize("goodbye", ["seen", "lost"])
def test_the_step_reconnects_after_its_database_connections_are_terminated(
        settings: Settings, goodbye: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if goodbye == "lost":  # as if the server had vanished without closing the sockets
        monkeypatch.setattr(db, "hung_up", lambda conn: False)
    tenant = make_tenant(settings)
    step = Running(settings)
    try:
        first = [f"{goodbye}-a{i}" for i in range(40)]
        send(settings, tenant, first)
        assert reserved_ids(settings, 40) >= set(first)
        before = retries()
        assert terminate_backends(settings.postgres_url) >= 2  # the ledger's, the requests'
        second = [f"{goodbye}-b{i}" for i in range(60)]
        send(settings, tenant, second)
        assert reserved_ids(settings, 100) >= set(first + second)
        # Seen: it replaced them before using them, and no batch failed. Lost: it met them,
        # and retried rather than dead-lettering.
        assert (retries() > before) == (goodbye == "lost")
    finally:
        step.close()
    assert drain(settings.kafka_bootstrap, settings.topic("estimated") + ".dlq", 1, 3) == []
    with db.connect(settings.postgres_url, autocommit=True) as conn:
        assert ledger_reserved(conn, tenant) == 100


def test_the_step_goes_on_across_a_redis_flush_and_the_projection_heals(
        settings: Settings) -> None:
    tenant = make_tenant(settings)
    step = Running(settings)
    client = redis.Redis.from_url(settings.redis_url)
    try:
        first = [f"c{i}" for i in range(40)]
        send(settings, tenant, first)
        assert reserved_ids(settings, 40) >= set(first)
        client.flushdb()
        second = [f"d{i}" for i in range(60)]
        send(settings, tenant, second)
        assert reserved_ids(settings, 100) >= set(first + second)
    finally:
        step.close()
    assert drain(settings.kafka_bootstrap, settings.topic("estimated") + ".dlq", 1, 3) == []
    with db.connect(settings.postgres_url, autocommit=True) as conn:
        ledger = PostgresLedger(conn)
        projection = RedisProjection(client)
        deadline = time.monotonic() + 10
        while client.get(GENERATION_KEY) is None and time.monotonic() < deadline:
            projection.catch_up(ledger)  # what the next reserve batch would do
        period = ledger.current_period(tenant)
        projection.sync(ledger)
        assert projection.balance(tenant, period) == ledger.balance(tenant, period)
        assert projection.balance(tenant, period).reserved == 100 * 10
