"""PostgreSQL connections for a threaded server: one per thread.

Granian and gunicorn serve the door from several threads and a psycopg connection runs one
statement at a time, so each thread gets its own PostgreSQL connection (opened on first use,
reopened when closed), the request store's committer thread too."""

from __future__ import annotations

import threading
from typing import Any

import psycopg

from quotaflow.adapters import postgres
from quotaflow.adapters.tenant_store import PostgresTenants
from quotaflow.ports import Principal


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
        # Each connection with the thread it is for: a thread that ended takes its connection
        # with it (closed at the next open), so a server with a thread per connection
        # (werkzeug's) holds as many as it has live threads, not one per request ever served.
        # Kept, they ran PostgreSQL out of connections under a login flood ("too many
        # clients"), each refused lookup a 503.
        self._opened: list[tuple[threading.Thread, psycopg.Connection[Any]]] = []
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
                kept = []
                for thread, c in self._opened:
                    if thread.is_alive() and not c.closed:
                        kept.append((thread, c))
                    else:
                        c.close()
                self._opened = [*kept, (threading.current_thread(), conn)]
        return conn

    def _lost(self, conn: psycopg.Connection[Any]) -> bool:
        """Whether `conn` predates a connection found broken (here or in another thread)."""
        if any(c.broken for _, c in self._opened):  # a list read: atomic under the GIL
            with self._lock:
                if any(c.broken for _, c in self._opened):
                    self._generation += 1
                    self._opened = [(t, c) for t, c in self._opened if not c.broken]
        return bool(self._local.generation != self._generation)

    def close(self) -> None:
        with self._lock:
            opened, self._opened = self._opened, []
        for _, conn in opened:
            conn.close()


class ThreadTenants:
    """The `TenantDirectory` on the calling thread's connection."""

    def __init__(self, connections: ThreadConnections) -> None:
        self.connections = connections

    def authenticate(self, api_key: str) -> Principal | None:
        return PostgresTenants(self.connections.get()).authenticate(api_key)
