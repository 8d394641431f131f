"""The door's per-thread PostgreSQL connections after the server dropped them all (a restart).
When the server said goodbye, each thread sees it before its next statement and reconnects:
no statement fails. When it could not (a network partition: simulated by hiding the goodbye),
the first statement to find out fails (the client gets a 503 and resends), and every other
thread opens a new connection before its next statement instead of failing one request each."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from quotaflow.adapters import postgres
from quotaflow.adapters.thread_connections import ThreadConnections
from tests.services import pg_base

THREADS = 4


@pytest.mark.parametrize("goodbye", ["seen", "lost"])
def test_after_the_server_drops_every_connection_at_most_one_statement_fails(
        goodbye: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if goodbye == "lost":  # as if the server had vanished without closing the sockets
        monkeypatch.setattr(postgres, "hung_up", lambda conn: False)
    url = f"{pg_base()}/postgres"
    connections = ThreadConnections(url)

    def select(sql: str) -> Callable[[], object]:
        def run() -> object:
            row = connections.get().execute(sql).fetchone()
            return row[0] if row else None
        return run

    with ThreadPoolExecutor(THREADS) as pool:
        def on_each_thread(fn: Callable[[], object], first: bool = False) -> list[object]:
            """`fn` once on each of the pool's threads (a barrier keeps them apart); with
            `first`, one of them runs to its end before the others start."""
            barrier, first_done = threading.Barrier(THREADS), threading.Event()

            def run(i: int) -> object:
                barrier.wait(5)
                if first and i > 0:
                    first_done.wait(5)
                try:
                    return fn()
                except psycopg.OperationalError as exc:
                    return type(exc).__name__
                finally:
                    if i == 0:
                        first_done.set()

            return list(pool.map(run, range(THREADS)))

        pids = on_each_thread(select("SELECT pg_backend_pid()"))
        assert len(set(pids)) == THREADS
        with psycopg.connect(url, autocommit=True) as admin:  # the server drops them all
            # The timeout waits for each backend to have exited, its goodbye sent: without
            # it a thread can run before the goodbye is on its socket (a busy machine).
            admin.execute("SELECT pg_terminate_backend(pid, 5000) FROM unnest(%s::int[]) AS pid",
                          (pids,))
        # Seen: every thread reconnects first. Lost: the first thread to use its connection
        # finds out and fails; the others reconnect.
        first = ["AdminShutdown"] if goodbye == "lost" else [1]
        assert on_each_thread(select("SELECT 1"), first=True) == first + [1] * 3
        assert on_each_thread(select("SELECT 1")) == [1] * THREADS
    connections.close()


def test_a_thread_per_request_server_holds_a_connection_per_live_thread_not_per_request(
) -> None:
    connections = ThreadConnections(f"{pg_base()}/postgres")
    opened: list[psycopg.Connection[object]] = []

    def one_request() -> None:  # werkzeug's threaded server: one thread per connection
        conn = connections.get()
        conn.execute("SELECT 1")
        opened.append(conn)

    try:
        for _ in range(20):
            t = threading.Thread(target=one_request)
            t.start()
            t.join()
        connections.get()  # the next open closes what ended threads held
        assert sum(not c.closed for c in opened) == 0
        assert len(connections._opened) == 1
    finally:
        connections.close()
