"""`quotaflow dev up` starts embedded PostgreSQL and Redis when none is reachable."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
import redis

from quotaflow.devstack.process import DevStackError, free_port
from quotaflow.devstack.stack import DevStack
from quotaflow.settings import Settings

pytestmark = pytest.mark.slow


def test_embedded_postgres_and_redis_start_when_the_configured_ones_are_unreachable(
        tmp_path: Path) -> None:
    nowhere = replace(Settings(),
                      postgres_url=f"postgresql://postgres@127.0.0.1:{free_port()}/quotaflow",
                      redis_url=f"redis://127.0.0.1:{free_port()}/0")
    stack = DevStack(tmp_path, nowhere)
    try:
        stack.ensure_postgres(explicit=False)
        stack.ensure_redis(explicit=False)
        assert stack.settings.postgres_url != nowhere.postgres_url
        with psycopg.connect(stack.settings.postgres_url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert redis.Redis.from_url(stack.settings.redis_url).ping()
    finally:
        stack.down()


def test_an_explicit_unreachable_postgres_url_is_an_error_naming_it(tmp_path: Path) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/quotaflow"
    stack = DevStack(tmp_path, replace(Settings(), postgres_url=url))
    with pytest.raises(DevStackError, match=r"POSTGRES_URL .* is not reachable"):
        stack.ensure_postgres(explicit=True)


def test_a_stack_that_fails_to_come_up_stops_what_it_had_started(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # checked after the broker started
    stack = DevStack(tmp_path, replace(Settings(), redis_url=url), kafka_port=free_port(),
                     brokers=1)
    with pytest.raises(DevStackError, match=r"REDIS_URL .* is not reachable"):
        stack.up(explicit_pg=False, explicit_redis=True, progress=lambda _m: None)
    assert stack.kafka.names[0] in stack.procs  # Apache Kafka's kafka-1, or Tansu's kafka
    assert [n for n, p in stack.procs.items() if p.poll() is None] == []
