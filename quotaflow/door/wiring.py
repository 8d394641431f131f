"""admit's ports, and the one function that opens the real ones from `Settings`.

Gunicorn serves the door from several threads and a psycopg connection runs one statement at
a time, so each thread gets its own PostgreSQL connection (opened on first use, reopened when
closed), the request store's committer thread too; Redis and Kafka clients are shared, both
are thread-safe."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import psycopg
import redis

from quotaflow.adapters import postgres
from quotaflow.adapters.kafka import KafkaPublisher
from quotaflow.adapters.postgres_clock import PostgresClock
from quotaflow.adapters.redis_client import connect_redis
from quotaflow.adapters.redis_gate import GroupScreenGate, RedisAdmissionGate
from quotaflow.adapters.redis_stream import RedisTokenStream
from quotaflow.adapters.request_store import GroupCommitRequestStore, PostgresRequestStore
from quotaflow.adapters.tenant_store import PostgresTenants
from quotaflow.door.limits import Balances
from quotaflow.ledger.projection import RedisProjection
from quotaflow.ports import (
    AdmissionGate,
    Clock,
    Principal,
    Publisher,
    RequestStore,
    TenantDirectory,
    TokenStream,
)
from quotaflow.runtime.step import Resources
from quotaflow.settings import Settings


class NothingHeld:
    """The resources of ports that hold nothing open (the in-memory fakes)."""

    def ready(self) -> bool:
        return True

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class DoorPorts:
    """Everything the door talks to; `resources` answers readiness and closes them."""

    tenants: TenantDirectory
    gate: AdmissionGate
    balances: Balances
    requests: RequestStore
    publisher: Publisher
    clock: Clock  # the ledger's
    resources: Resources = field(default_factory=NothingHeld)
    # Token deltas the OpenAI door and GET /v1/requests/{id}/events relay; None: no streaming
    # (the relay falls back to the request record).
    stream: TokenStream | None = None


class ThreadConnections:
    """One autocommit PostgreSQL connection per thread, with a connect timeout and a statement
    timeout (0: none), so a thread never waits minutes on a database that is down.

    A connection the server closed while it sat idle (a restart, a failover) is replaced
    before its next statement (`postgres.hung_up`). One whose server vanished without a word
    (a network partition) is found broken only by a failing statement; so that each thread
    does not fail one request of its own (dozens of 503s, spread over as many seconds), once
    any connection is found broken every thread opens a new one before its next statement."""

    def __init__(self, url: str, connect_timeout_s: int = 0,
                 statement_timeout_ms: int = 0) -> None:
        self.url = url
        self.connect_timeout_s = connect_timeout_s
        self.statement_timeout_ms = statement_timeout_ms
        self._local = threading.local()
        self._lock = threading.Lock()
        self._opened: list[psycopg.Connection[Any]] = []
        self._generation = 0  # moves when a connection is found broken

    def get(self) -> psycopg.Connection[Any]:
        """This thread's connection."""
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if (conn is None or conn.broken or conn.closed or self._lost(conn)
                or postgres.hung_up(conn)):
            if conn is not None:
                conn.close()
            conn = postgres.connect(self.url, True, self.connect_timeout_s,
                                    self.statement_timeout_ms)
            self._local.conn, self._local.generation = conn, self._generation
            with self._lock:
                self._opened = [c for c in self._opened if not c.closed] + [conn]
        return conn

    def _lost(self, conn: psycopg.Connection[Any]) -> bool:
        """Whether `conn` predates a connection found broken (here or in another thread)."""
        if any(c.broken for c in self._opened):  # a list read: atomic under the GIL
            with self._lock:
                if any(c.broken for c in self._opened):
                    self._generation += 1
                    self._opened = [c for c in self._opened if not c.broken]
        return bool(self._local.generation != self._generation)

    def close(self) -> None:
        with self._lock:
            opened, self._opened = self._opened, []
        for conn in opened:
            conn.close()


class _ThreadTenants:
    def __init__(self, connections: ThreadConnections) -> None:
        self.connections = connections

    def authenticate(self, api_key: str) -> Principal | None:
        return PostgresTenants(self.connections.get()).authenticate(api_key)


@dataclass(frozen=True)
class _Held:
    connections: ThreadConnections
    redis: redis.Redis
    publisher: KafkaPublisher

    def ready(self) -> bool:
        try:
            self.connections.get().execute("SELECT 1")
            return bool(self.redis.ping())
        except (psycopg.Error, redis.RedisError):
            return False

    def close(self) -> None:
        self.publisher.close(5)
        self.connections.close()
        self.redis.close()


def connect(settings: Settings) -> DoorPorts:
    """The real ports: PostgreSQL (tenants, requests, the ledger's clock), Redis (rate limit,
    pre-check, balances, token streams) and Kafka (the `admitted` topic)."""
    connections = ThreadConnections(settings.postgres_url, settings.db_connect_timeout_s,
                                    settings.db_statement_timeout_ms)
    client = connect_redis(settings.redis_url, settings.redis_timeout_ms)
    # A broker that does not confirm within a leader's failover is a 503 the client can retry,
    # before a client's own timeout (Settings.kafka_publish_timeout_ms says why 8 s).
    publisher = KafkaPublisher.from_settings(settings,
                                             timeout_s=settings.kafka_publish_timeout_ms / 1000)
    return DoorPorts(
        tenants=_ThreadTenants(connections), gate=GroupScreenGate(RedisAdmissionGate(client)),
        balances=RedisProjection(client),
        requests=GroupCommitRequestStore(PostgresRequestStore(connections.get)),
        publisher=publisher, clock=PostgresClock(connections.get),
        resources=_Held(connections, client, publisher), stream=RedisTokenStream(client))
