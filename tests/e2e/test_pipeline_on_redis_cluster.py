"""The whole pipeline as local processes with `QF_REDIS_MODE=cluster`: admit and the five
steps reach a 3-master Redis Cluster that speaks only TLS and asks for a password
(`tests.redis_servers`), through the one `REDIS_URL` every process is given. A request is
answered, charged exactly, and the projection on the cluster equals the ledger."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from quotaflow import client, compose
from quotaflow.adapters import postgres as db
from quotaflow.adapters import tenant_store as tenants
from quotaflow.devstack.process import free_port
from quotaflow.devstack.stack import DevStack
from quotaflow.ledger import audit
from quotaflow.ledger.store import PostgresLedger
from quotaflow.settings import Settings
from tests.redis_servers import client as redis_client
from tests.redis_servers import cluster_url
from tests.services import fresh_database

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    redis_client("redis-cluster", 0)  # emptied
    port = free_port()
    settings = replace(Settings(), postgres_url=fresh_database("qf_test_e2e_redis_cluster"),
                       redis_url=cluster_url(), redis_mode="cluster", sweep_interval_s=1,
                       kafka_session_timeout_ms=2000, public_url=f"http://127.0.0.1:{port}")
    s = DevStack(Path(tmp_path_factory.mktemp("cluster-stack")), settings, admit_port=port,
                 kafka_port=free_port(), admit_workers=1)
    try:
        s.up(explicit_pg=True, explicit_redis=True, progress=lambda _msg: None)
        yield s
    finally:
        s.down()


def test_a_request_is_answered_and_charged_with_every_process_on_the_cluster(
        stack: DevStack) -> None:
    s = stack.settings
    with db.connect(s.postgres_url, autocommit=True) as conn:
        key = tenants.create_tenant(conn, "on-cluster", 1000)
        compose.projection(s).sync(PostgresLedger(conn))
    accepted = client.submit(stack.admit_url, key, {"model": s.model_name,
                                                    "prompt": "the quick brown fox",
                                                    "max_tokens": 3})
    result = client.wait(stack.admit_url, key, str(accepted["request_id"]), timeout_s=60)
    assert result["status"] == "completed", result
    assert result["output"] == "fox brown quick"
    quota = client.quota(stack.admit_url, key)
    assert (quota["granted"], quota["reserved"], quota["spent"]) == (1000, 0, 8)
    with db.connect(s.postgres_url, autocommit=True) as conn:
        replay = audit.replay(conn)
        audit.compare_projection(replay, compose.projection(s), None, None)
        assert replay.ok, replay.findings
