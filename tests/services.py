"""The PostgreSQL and Redis the integration tests use: the running ones on 127.0.0.1, or
embedded ones started once, on first use (unit tests never ask, so they need neither)."""

from __future__ import annotations

import atexit
import os
import tempfile
from functools import cache
from pathlib import Path

from quotaflow.adapters import postgres as db
from quotaflow.devstack import kafka_cluster
from quotaflow.devstack.services import postgres_reachable, redis_reachable
from quotaflow.devstack.stack import DevStack
from quotaflow.settings import Settings


@cache
def _services() -> tuple[str, str]:
    """The running PostgreSQL and Redis, or embedded ones started for this test session."""
    pg = os.environ.get("QF_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
    rd = os.environ.get("QF_TEST_REDIS", "redis://127.0.0.1:6379")
    pg_ok, rd_ok = postgres_reachable(pg + "/postgres"), redis_reachable(rd + "/0")
    if pg_ok and rd_ok:
        return pg, rd
    stack = DevStack(Path(tempfile.mkdtemp(prefix="qf-services-")),
                     Settings(postgres_url=pg + "/postgres", redis_url=rd + "/0"))
    atexit.register(stack.down)
    if not pg_ok:
        stack.ensure_postgres(explicit=False)
        pg = stack.settings.postgres_url.rsplit("/", 1)[0]
    if not rd_ok:
        stack.ensure_redis(explicit=False)
        rd = stack.settings.redis_url.rsplit("/", 1)[0]
    return pg, rd


def pg_base() -> str:
    """`postgresql://user@host:port`, without a database."""
    return _services()[0]


def redis_base() -> str:
    """`redis://host:port`, without a database index."""
    return _services()[1]


def fresh_database(name: str) -> str:
    """Drop and recreate database `name`, migrated; returns its URL."""
    url = f"{pg_base()}/{name}"
    db.recreate(url)
    return url


def session_broker() -> str:
    """The broker the Kafka tests run on: `QF_TEST_BROKER` (kafka or tansu), else Apache Kafka
    where it can run here (Java 17+ and its fetched jars), else Tansu."""
    chosen = os.environ.get("QF_TEST_BROKER", "")
    if chosen not in ("", "kafka", "tansu"):
        raise ValueError(f"QF_TEST_BROKER={chosen!r}: kafka or tansu")
    return chosen or ("kafka" if kafka_cluster.available() else "tansu")
