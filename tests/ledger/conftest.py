from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import redis

from quotaflow.adapters import postgres as db
from quotaflow.adapters import tenant_store as tenants
from quotaflow.ledger.projection import RedisProjection
from quotaflow.ledger.store import PostgresLedger
from tests.services import fresh_database, redis_base

LEDGER_REDIS_DB = 10


@pytest.fixture(scope="session")
def ledger_url() -> str:
    return fresh_database("qf_test_ledger")


@pytest.fixture
def conn(ledger_url: str) -> Iterator[psycopg.Connection[Any]]:
    with db.connect(ledger_url, autocommit=True) as c:
        c.execute("TRUNCATE tenants, api_keys, ledger_streams, ledger_events, reservations, "
                  "balances, ledger_commands, requests, level_balances, prices CASCADE")
        c.execute("UPDATE outbox_cursors SET seq = 0")
        yield c


@pytest.fixture
def ledger(conn: psycopg.Connection[Any]) -> PostgresLedger:
    return PostgresLedger(conn)


@pytest.fixture
def projection() -> RedisProjection:
    client = redis.Redis.from_url(f"{redis_base()}/{LEDGER_REDIS_DB}")
    client.flushdb()
    return RedisProjection(client)


def make_tenant(conn: psycopg.Connection[Any], name: str, tokens: int) -> str:
    return tenants.create_tenant(conn, name, tokens)
