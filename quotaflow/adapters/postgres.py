"""PostgreSQL connections and versioned migrations (infra/migrations/NNNN_name.sql).

A long-running process holds its connections in `Reconnecting`: after a server restart, a
failover or `pg_terminate_backend` the next call opens a new connection instead of failing
on the dead one (`hung_up`), or, when the server could not say goodbye, after the one
statement that finds it dead. Every connection a process opens for its work has a connect timeout
and a statement timeout, so an unreachable or stuck server costs seconds, not minutes."""

from __future__ import annotations

import logging
import select
import threading
from collections.abc import Callable
from typing import Any, Self
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg.pq import TransactionStatus

from quotaflow.events.resources import data_path
from quotaflow.settings import Settings

log = logging.getLogger(__name__)
Conn = psycopg.Connection[Any]


def connect(url: str, autocommit: bool = False, connect_timeout_s: int = 0,
            statement_timeout_ms: int = 0) -> psycopg.Connection[tuple[object, ...]]:
    """A connection; a timeout of 0 leaves the server's default (none)."""
    options: dict[str, Any] = {}
    if connect_timeout_s:
        options["connect_timeout"] = connect_timeout_s
    if statement_timeout_ms:
        options["options"] = f"-c statement_timeout={statement_timeout_ms}"
    return psycopg.connect(url, autocommit=autocommit, **options)


def hung_up(conn: Conn) -> bool:
    """Whether the server closed idle `conn` (a restart, a failover, `pg_terminate_backend`).
    Its goodbye waits unread on the socket, and psycopg reads it only when the next statement
    fails on it; a zero-timeout poll finds it first. Nothing else arrives on an idle
    connection that runs no LISTEN, and none of ours does."""
    if conn.closed or conn.info.transaction_status != TransactionStatus.IDLE:
        return False
    try:
        poll = select.poll()
        poll.register(conn.pgconn.socket, select.POLLIN)
        return bool(poll.poll(0))
    except (OSError, psycopg.Error):
        return True


class Reconnecting:
    """One connection, opened on first use and reopened on the next call after it was closed
    or broken. Calling it answers the open connection."""

    def __init__(self, url: str, autocommit: bool = True, connect_timeout_s: int = 0,
                 statement_timeout_ms: int = 0) -> None:
        self.url = url
        self.autocommit = autocommit
        self.connect_timeout_s = connect_timeout_s
        self.statement_timeout_ms = statement_timeout_ms
        self.reconnects = 0
        self._conn: Conn | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, autocommit: bool = True) -> Reconnecting:
        """A holder with `settings`' database, connect timeout and statement timeout."""
        return cls(settings.postgres_url, autocommit, settings.db_connect_timeout_s,
                   settings.db_statement_timeout_ms)

    def __call__(self) -> Conn:
        with self._lock:
            conn = self._conn
            if conn is None or conn.closed or conn.broken or hung_up(conn):
                if conn is not None:
                    self.reconnects += 1
                    log.warning("PostgreSQL connection lost; reconnecting")
                    conn.close()
                conn = connect(self.url, self.autocommit, self.connect_timeout_s,
                               self.statement_timeout_ms)
                self._conn = conn
            return conn

    @property
    def closed(self) -> bool:
        """False while a connection is open or can be opened now (readiness)."""
        try:
            return bool(self().closed)
        except psycopg.Error:
            return True

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class OnConnection:
    """Base of an adapter that runs its statements on one connection, or, given a connection
    provider (a `Reconnecting`), on the connection the provider answers at each call, so a lost
    connection is replaced on the next call."""

    def __init__(self, conn: psycopg.Connection[Any] | Callable[[], psycopg.Connection[Any]]
                 ) -> None:
        self._connection: Callable[[], psycopg.Connection[Any]] = (
            conn if callable(conn) else (lambda: conn))
        self._close: Callable[[], None] = getattr(conn, "close", lambda: None)

    @property
    def conn(self) -> psycopg.Connection[Any]:
        """The connection the next statement runs on."""
        return self._connection()

    @classmethod
    def connect(cls, url: str) -> Self:
        """The adapter on a new autocommit connection to `url`."""
        return cls(psycopg.connect(url, autocommit=True))

    def close(self) -> None:
        self._close()


def ensure_database(url: str) -> None:
    """Create the URL's database if it does not exist (connecting to `postgres` to do it)."""
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')
            log.info("created database %s", name)


def migrate(url: str) -> list[str]:
    """Apply pending migrations in order, each in its own transaction; returns those applied."""
    ensure_database(url)
    applied: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                     "(version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
        for path in sorted(data_path("migrations").glob("*.sql")):
            version = path.stem
            with conn.transaction():
                # Concurrent migrators (several processes starting at once) queue here.
                conn.execute("LOCK TABLE schema_migrations IN EXCLUSIVE MODE")
                done = conn.execute("SELECT 1 FROM schema_migrations WHERE version = %s",
                                    (version,)).fetchone()
                if done:
                    continue
                conn.execute(path.read_text())
                conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
                applied.append(version)
                log.info("applied migration %s", version)
    return applied


def recreate(url: str) -> None:
    """Drop the URL's database and migrate a new one (tests and benchmarks)."""
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    with psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    migrate(url)
