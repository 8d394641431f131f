from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from quotaflow.devstack.process import free_port
from quotaflow.devstack.stack import DevStack
from quotaflow.settings import Settings
from tests.services import fresh_database, redis_base, session_broker

E2E_REDIS_DB = 9


def start_stack(tmp: Path, database: str = "qf_test_e2e", redis_db: int = E2E_REDIS_DB,
                knative: bool = False, **settings_over: object) -> DevStack:
    # The suites on a stack drive one key hard on purpose (50 concurrent streams, status polls
    # in a tight loop): fair share's per-key caps are proven in tests/hostile, not here.
    settings_over.setdefault("waits_per_key", 64)
    settings_over.setdefault("reads_per_s_per_key", 10_000)
    url = fresh_database(database)
    redis_url = f"{redis_base()}/{redis_db}"
    redis.Redis.from_url(redis_url).flushdb()
    settings = replace(Settings(), postgres_url=url, redis_url=redis_url, sweep_interval_s=1,
                       kafka_session_timeout_ms=2000, **settings_over)  # type: ignore[arg-type]
    port = free_port()
    settings = replace(settings, public_url=f"http://127.0.0.1:{port}")
    stack = DevStack(tmp, settings, admit_port=port, kafka_port=free_port(), admit_workers=1,
                     broker=session_broker(), knative=knative)
    try:
        stack.up(explicit_pg=True, explicit_redis=True, progress=lambda _msg: None)
    except BaseException:
        stack.down()
        raise
    return stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    """The whole pipeline as local processes: Kafka (3 Apache Kafka nodes, or Tansu), moto S3,
    admit under gunicorn and the five consumer steps, on real PostgreSQL and Redis, with the
    stand-in model."""
    s = start_stack(tmp_path_factory.mktemp("stack"))
    yield s
    s.down()
