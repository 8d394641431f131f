"""The two adapters of each ledger-side port, for the contract suites: the in-memory one
(needs nothing) and the real one, on PostgreSQL database `qf_test_contract_ledger` (the
projection's suite uses Redis db index 12), started and cleaned only when a real variant
runs (`-k memory` needs no service)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any

import psycopg

from quotaflow.adapters.clock import FixedClock
from quotaflow.adapters.memory.ledger import MemoryLedger
from quotaflow.ports import Ledger

DATABASE = "qf_test_contract_ledger"
REDIS_DB = 12
TABLES = ("tenants, api_keys, ledger_streams, ledger_events, reservations, balances, "
          "ledger_commands, requests, level_balances, prices")


@cache
def _database_url() -> str:
    from tests.services import fresh_database

    return fresh_database(DATABASE)


@contextmanager
def postgres() -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to the contract database, emptied."""
    with psycopg.connect(_database_url(), autocommit=True) as conn:
        conn.execute(f"TRUNCATE {TABLES} CASCADE")
        yield conn


@dataclass
class LedgerUnderTest:
    """A ledger, how to give it a tenant, and how to make its open reservations older."""

    ledger: Ledger
    add_tenant: Callable[[str, int], None]
    age_reservations: Callable[[int], None]


def memory_ledger() -> LedgerUnderTest:
    clock = FixedClock()
    ledger = MemoryLedger(clock)
    return LedgerUnderTest(ledger, ledger.add_tenant, clock.advance)


def postgres_ledger(conn: psycopg.Connection[Any]) -> LedgerUnderTest:
    from quotaflow.adapters.tenant_store import create_tenant
    from quotaflow.ledger.store import PostgresLedger

    def add_tenant(tenant: str, tokens: int) -> None:
        create_tenant(conn, tenant, tokens)

    def age(seconds: int) -> None:
        conn.execute("UPDATE reservations SET reserved_at = reserved_at - "
                     "make_interval(secs => %s)", (seconds,))

    return LedgerUnderTest(PostgresLedger(conn), add_tenant, age)
