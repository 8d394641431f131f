"""admit's door composed from `Settings` (`quotaflow.compose.connect_door`) on Redis as
production runs it: a 3-master Redis Cluster (`QF_REDIS_MODE=cluster`) and a Redis that speaks
only TLS and asks for a password (`tests.redis_servers`). A good request is answered 202, its
resend is the same request, the quota pre-check and the key's rate limit refuse with 429, and
`GET /v1/quota` reads the projection. PostgreSQL database `qf_test_admit_production_redis`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from quotaflow import compose
from quotaflow.adapters import postgres as db
from quotaflow.adapters import tenant_store as tenants
from quotaflow.ledger.store import PostgresLedger
from quotaflow.runtime.door.app import create_app
from quotaflow.settings import Settings
from tests.problems import assert_problem, body
from tests.redis_servers import client, url
from tests.services import fresh_database


@pytest.fixture(scope="module", params=["redis-cluster", "redis-tls"])
def env(request: pytest.FixtureRequest, kafka_bootstrap: str) -> Iterator[dict[str, Any]]:
    variant = str(request.param)
    client(variant, 0)  # emptied
    settings = replace(Settings(), postgres_url=fresh_database("qf_test_admit_production_redis"),
                       redis_url=url(variant, 0), kafka_bootstrap=kafka_bootstrap,
                       redis_mode="cluster" if variant == "redis-cluster" else "standalone")
    from quotaflow.adapters import kafka
    kafka.create_topics(settings)
    with db.connect(settings.postgres_url, autocommit=True) as conn:
        keys = {name: tenants.create_tenant(conn, name, tokens, rate_limit_per_min=limit)
                for name, tokens, limit in (("acme", 1000, 1000), ("tiny", 10, 1000),
                                            ("chatty", 10_000, 3))}
        compose.projection(settings).sync(PostgresLedger(conn))
    app = create_app(settings)
    yield {"client": app.test_client(), **keys}
    app.extensions["quotaflow"]["resources"].close()


def post(env: dict[str, Any], tenant: str, ce_id: str, **data: Any) -> Any:
    return env["client"].post("/", data=body(**data), headers={
        "ce-specversion": "1.0", "ce-id": ce_id, "ce-source": "/test",
        "ce-type": "dev.quotaflow.inference.requested", "Content-Type": "application/json",
        "Authorization": f"Bearer {env[tenant]}"})


def test_a_request_is_admitted_and_its_resend_is_the_same_request(env: dict[str, Any]) -> None:
    first, second = post(env, "acme", "same"), post(env, "acme", "same")
    assert first.status_code == second.status_code == 202, first.get_data(as_text=True)
    assert first.get_json()["request_id"] == second.get_json()["request_id"]


def test_the_quota_pre_check_and_the_rate_limit_refuse(env: dict[str, Any]) -> None:
    assert_problem(post(env, "tiny", "big", max_tokens=50), 429, "tokens left")
    codes = [post(env, "chatty", f"r{i}").status_code for i in range(5)]
    assert codes == [202, 202, 202, 429, 429]


def test_the_quota_is_read_from_the_projection(env: dict[str, Any]) -> None:
    resp = env["client"].get("/v1/quota", headers={"Authorization": f"Bearer {env['acme']}"})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json()["granted"] == 1000
