"""The door's per-thread PostgreSQL connections after the server dropped them all (a restart):
the first statement to find out fails (the client gets a 503 and resends), and every other
thread opens a new connection before its next statement instead of failing one request each."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import psycopg

from quotaflow.door.wiring import ThreadConnections
from tests.services import pg_base

THREADS = 4


def test_once_one_connection_is_found_dropped_the_other_threads_reconnect() -> None:
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
            admin.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid",
                          (pids,))
        # The first thread to use its connection finds out and fails; the others reconnect.
        assert on_each_thread(select("SELECT 1"), first=True) == ["AdminShutdown"] + [1] * 3
        assert on_each_thread(select("SELECT 1")) == [1] * THREADS
    connections.close()
