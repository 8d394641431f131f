"""admit's HTTP contract on real PostgreSQL, Redis and Kafka (database `qf_test_admit`, Redis
db 7): bad input gets a 4xx application/problem+json naming what was wrong (a quota refusal
names the level), never a 5xx, and leaves no request row (the nastiest: U+0000 in the path, the
id and the prompt, a lone surrogate, JSON nested 5,000 deep); good input gets a 202; an
unreachable backing service gets a 503. The same behaviour on in-memory ports, in more detail,
is in tests/unit/test_admit_*.py."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import psycopg
import pytest
import redis

from quotaflow.adapters import budget_store
from quotaflow.adapters import postgres as db
from quotaflow.adapters import tenant_store as tenants
from quotaflow.ledger.commands import ReserveTokens
from quotaflow.ledger.projection import RedisProjection
from quotaflow.ledger.store import PostgresLedger
from quotaflow.runtime.door.app import create_app
from quotaflow.settings import Settings
from tests.problems import MODEL, assert_problem, body
from tests.services import fresh_database, redis_base

REDIS_DB = 7


@pytest.fixture(scope="module")
def env(kafka_bootstrap: str) -> Iterator[dict[str, Any]]:
    url = fresh_database("qf_test_admit")
    redis_url = f"{redis_base()}/{REDIS_DB}"
    redis.Redis.from_url(redis_url).flushdb()
    settings = replace(Settings(), postgres_url=url, redis_url=redis_url,
                       kafka_bootstrap=kafka_bootstrap, max_body_bytes=4096)
    from quotaflow.adapters import kafka
    kafka.create_topics(settings)
    with db.connect(url, autocommit=True) as conn:
        key = tenants.create_tenant(conn, "acme", 1000, rate_limit_per_min=1000)
        small = tenants.create_tenant(conn, "tiny", 10)
        limited = tenants.create_tenant(conn, "chatty", 10_000, rate_limit_per_min=3)
        RedisProjection.connect(redis_url).catch_up(PostgresLedger(conn))
    app = create_app(settings)
    yield {"client": app.test_client(), "key": key, "small": small, "limited": limited,
           "settings": settings}
    app.extensions["quotaflow"]["resources"].close()


def headers(key: str | None, **over: str) -> dict[str, str]:
    h = {"ce-specversion": "1.0", "ce-id": "e1", "ce-source": "/test", "ce-type":
         "dev.quotaflow.inference.requested", "Content-Type": "application/json"}
    if key:
        h["Authorization"] = f"Bearer {key}"
    h.update(over)
    return {k: v for k, v in h.items() if v != ""}






@pytest.mark.parametrize("drop", ["ce-id", "ce-source", "ce-type", "ce-specversion"])
def test_missing_required_attribute_is_named(env: dict[str, Any], drop: str) -> None:
    h = headers(env["key"], **{drop: ""})
    if drop == "ce-specversion":  # still binary mode through the other ce-* headers
        pass
    resp = env["client"].post("/", headers=h, data=body())
    assert_problem(resp, 400, drop)


def test_wrong_specversion_is_refused(env: dict[str, Any]) -> None:
    resp = env["client"].post("/", headers=headers(env["key"], **{"ce-specversion": "0.3"}),
                              data=body())
    assert_problem(resp, 400, "specversion must be 1.0", "0.3")


def test_unknown_event_type_is_refused(env: dict[str, Any]) -> None:
    resp = env["client"].post("/", headers=headers(env["key"], **{"ce-type": "com.acme.x"}),
                              data=body())
    assert_problem(resp, 400, "unknown event type", "com.acme.x")


def test_invalid_json_is_refused(env: dict[str, Any]) -> None:
    resp = env["client"].post("/", headers=headers(env["key"]), data=b'{"model": ')
    assert_problem(resp, 400, "not valid JSON")


def test_wrong_content_type_is_415(env: dict[str, Any]) -> None:
    resp = env["client"].post("/", headers=headers(env["key"], **{"Content-Type": "text/plain"}),
                              data=body())
    assert_problem(resp, 415, "application/json", "text/plain")


def test_plain_json_without_cloudevent_attributes_is_415(env: dict[str, Any]) -> None:
    resp = env["client"].post("/", headers={"Authorization": f"Bearer {env['key']}",
                                            "Content-Type": "application/json"}, data=body())
    assert_problem(resp, 415, "CloudEvent")


def test_oversized_body_is_413(env: dict[str, Any]) -> None:
    resp = env["client"].post("/", headers=headers(env["key"]), data=body(prompt="x" * 5000))
    assert_problem(resp, 413, "the limit is 4096")


def test_missing_key_is_401(env: dict[str, Any]) -> None:
    resp = env["client"].post("/", headers=headers(None), data=body())
    assert_problem(resp, 401, "Authorization")
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("key", ["qf_nothere_secret", "not-a-key", "qf_abc"])
def test_invalid_key_is_401(env: dict[str, Any], key: str) -> None:
    resp = env["client"].post("/", headers=headers(key), data=body())
    assert_problem(resp, 401, "not valid")


def test_right_key_id_with_wrong_secret_is_401(env: dict[str, Any]) -> None:
    forged = env["key"].rsplit("_", 1)[0] + "_wrongsecret"
    resp = env["client"].post("/", headers=headers(forged), data=body())
    assert_problem(resp, 401, "not valid")


@pytest.mark.parametrize("over, needle", [
    ({"max_tokens": 0}, "max_tokens must be between"),
    ({"max_tokens": "8"}, "max_tokens is required (an integer)"),
    ({"max_tokens": 10_000}, "max_tokens must be between"),
    ({"model": "gpt-9"}, "unknown model 'gpt-9'"),
    ({"prompt": ""}, "prompt must be a non-empty string"),
    ({"prompt": None}, "exactly one of data.prompt or data.messages"),
    ({"messages": [{"role": "user", "content": "x"}]}, "exactly one of"),
    ({"temperature": 9}, "temperature must be a number"),
    ({"seed": -1}, "seed must be a non-negative integer"),
    ({"stream": "yes"}, "data.stream must be true or false"),
    ({"streaming": True}, "unknown field(s) in data: streaming"),
])
def test_invalid_data_is_named(env: dict[str, Any], over: dict[str, Any], needle: str) -> None:
    resp = env["client"].post("/", headers=headers(env["key"]), data=body(**over))
    assert_problem(resp, 400, needle)


def test_invalid_message_role_is_named(env: dict[str, Any]) -> None:
    data = {"model": MODEL, "max_tokens": 4, "messages": [{"role": "robot", "content": "x"}]}
    resp = env["client"].post("/", headers=headers(env["key"]), data=json.dumps(data))
    assert_problem(resp, 400, "messages[0].role")


def test_binary_event_is_accepted_with_request_id_and_status_url(env: dict[str, Any]) -> None:
    resp = env["client"].post("/", headers=headers(env["key"], **{"ce-id": "ok-1"}), data=body())
    assert resp.status_code == 202, resp.get_data(as_text=True)
    out = resp.get_json()
    assert out["status_url"].endswith(f"/v1/requests/{out['request_id']}")
    status = env["client"].get(f"/v1/requests/{out['request_id']}",
                               headers={"Authorization": f"Bearer {env['key']}"})
    assert status.status_code == 200
    assert status.get_json()["status"] == "queued"


def test_structured_event_is_accepted(env: dict[str, Any]) -> None:
    envelope = {"specversion": "1.0", "id": "structured-1", "source": "/test",
                "type": "dev.quotaflow.inference.requested",
                "datacontenttype": "application/json", "data": json.loads(body())}
    resp = env["client"].post("/", data=json.dumps(envelope), headers={
        "Authorization": f"Bearer {env['key']}",
        "Content-Type": "application/cloudevents+json"})
    assert resp.status_code == 202, resp.get_data(as_text=True)


def test_same_event_twice_is_the_same_request_and_a_changed_payload_is_409(
        env: dict[str, Any]) -> None:
    h = headers(env["key"], **{"ce-id": "dup-1"})
    first = env["client"].post("/", headers=h, data=body())
    second = env["client"].post("/", headers=h, data=body())
    assert first.status_code == second.status_code == 202
    assert first.get_json()["request_id"] == second.get_json()["request_id"]
    changed = env["client"].post("/", headers=h, data=body(max_tokens=9))
    assert_problem(changed, 409, "different payload")


def test_request_of_another_tenant_is_not_found(env: dict[str, Any]) -> None:
    resp = env["client"].post("/", headers=headers(env["key"], **{"ce-id": "mine"}), data=body())
    rid = resp.get_json()["request_id"]
    other = env["client"].get(f"/v1/requests/{rid}",
                              headers={"Authorization": f"Bearer {env['small']}"})
    assert_problem(other, 404, rid)


def test_quota_precheck_answers_429_with_retry_after(env: dict[str, Any]) -> None:
    resp = env["client"].post("/", headers=headers(env["small"]), data=body(max_tokens=50))
    problem = assert_problem(resp, 429, "tokens left")
    assert problem["type"].endswith("quota-exhausted")
    assert int(resp.headers["Retry-After"]) > 0


def test_a_team_whose_projected_tokens_cannot_cover_a_request_is_429_naming_it(
        env: dict[str, Any]) -> None:
    settings = env["settings"]
    with db.connect(settings.postgres_url, autocommit=True) as conn:
        tenants.create_tenant(conn, "orgs", 10_000)
        budget_store.create_team(conn, "orgs", "ml", tokens=100)
        first = tenants.create_key(conn, "orgs", team="ml")
        second = tenants.create_key(conn, "orgs", team="ml")
        ledger = PostgresLedger(conn)
        ledger.reserve([ReserveTokens("orgs", "held", 70, "h", first.split("_")[1])])
        RedisProjection.connect(settings.redis_url).catch_up(ledger)
    over = env["client"].post("/", headers=headers(second, **{"ce-id": "t1"}),
                              data=body(max_tokens=50))
    problem = assert_problem(over, 429, "team 'ml' of tenant 'orgs' has 30 of 100 tokens left "
                             "this period; this request may need 51")
    assert problem["type"].endswith("quota-exhausted") and int(over.headers["Retry-After"]) > 0
    within = env["client"].post("/", headers=headers(second, **{"ce-id": "t2"}),
                                data=body(max_tokens=20))
    assert within.status_code == 202, within.get_data(as_text=True)


def test_rate_limit_answers_429_after_the_keys_limit(env: dict[str, Any]) -> None:
    codes = [env["client"].post("/", headers=headers(env["limited"], **{"ce-id": f"r{i}"}),
                                data=body()).status_code for i in range(5)]
    assert codes[:3] == [202, 202, 202]
    assert codes[3:] == [429, 429]


def test_a_keys_own_rate_limit_refuses_its_third_request_and_not_its_siblings(
        env: dict[str, Any]) -> None:
    with db.connect(env["settings"].postgres_url, autocommit=True) as conn:
        sibling = tenants.create_tenant(conn, "siblings", 10_000, rate_limit_per_min=1000)
        own = tenants.create_key(conn, "siblings", rate_limit_per_min=2)
        RedisProjection.connect(env["settings"].redis_url).catch_up(PostgresLedger(conn))

    def send(key: str, n: int) -> Any:
        return env["client"].post("/", headers=headers(key, **{"ce-id": f"own-{n}"}),
                                  data=body())

    # the limit counts in whole clock minutes: three sends across a minute's end would be two
    # windows, so start well inside one
    if time.time() % 60 > 50:
        time.sleep(61 - time.time() % 60)
    first_two = [send(own, n).status_code for n in range(2)]
    third = send(own, 2)
    assert first_two == [202, 202]
    problem = assert_problem(third, 429, "2 requests a minute")
    assert problem["type"].endswith("rate-limited")
    assert 1 <= int(third.headers["Retry-After"]) <= 60
    assert [send(sibling, n).status_code for n in range(3, 8)] == [202] * 5


def test_quota_reads_the_projection(env: dict[str, Any]) -> None:
    resp = env["client"].get("/v1/quota", headers={"Authorization": f"Bearer {env['small']}"})
    assert resp.status_code == 200
    q = resp.get_json()
    assert (q["granted"], q["reserved"], q["spent"], q["remaining"]) == (10, 0, 0, 10)


def test_unknown_path_and_method_are_problems(env: dict[str, Any]) -> None:
    assert_problem(env["client"].get("/nope"), 404)
    assert_problem(env["client"].delete("/v1/quota"), 405)


def test_readiness_answers_ready_with_the_services_up(env: dict[str, Any]) -> None:
    assert env["client"].get("/health/readiness").status_code == 200


def request_rows(env: dict[str, Any]) -> int:
    with psycopg.connect(env["settings"].postgres_url) as conn:
        row = conn.execute("SELECT count(*) FROM requests").fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture(scope="module")
def roomy(env: dict[str, Any]) -> Iterator[Any]:
    """A client of a door with the default 64 KiB body limit (deep JSON needs 10 KB)."""
    app = create_app(replace(env["settings"], max_body_bytes=64 * 1024))
    yield app.test_client()
    app.extensions["quotaflow"]["resources"].close()


DEEP = b"[" * 5000 + b"]" * 5000
NASTY = [
    ("binary", {"ce-id": "a%00b"}, body(), "ce-id contains U+0000"),
    ("binary", {"ce-source": "/x\x00"}, body(), "ce-source contains U+0000"),
    ("binary", {}, b'{"model": "%s", "prompt": "a\\ud800b", "max_tokens": 8}' % MODEL.encode(),
     "data.prompt contains a lone surrogate U+D800"),
    ("binary", {}, b'{"model": "%s", "prompt": "a\\u0000b", "max_tokens": 8}' % MODEL.encode(),
     "data.prompt contains U+0000"),
    ("binary", {}, b'{"model": ' + DEEP + b"}", "data nests JSON deeper than 16 levels"),
    ("structured", {}, json.dumps({"specversion": "1.0", "id": "a\x00", "source": "/t",
                                   "type": "dev.quotaflow.inference.requested",
                                   "data": json.loads(body())}).encode(),
     "id contains U+0000"),
    ("structured", {}, json.dumps({"specversion": "1.0", "id": "a", "source": "/t\x00",
                                   "type": "dev.quotaflow.inference.requested",
                                   "data": json.loads(body())}).encode(),
     "source contains U+0000"),
    ("structured", {}, b'{"specversion": "1.0", "data": ' + DEEP + b"}",
     "body nests JSON deeper than 16 levels"),
]


@pytest.mark.parametrize("mode, over, data, needle", NASTY, ids=[n[3] for n in NASTY])
def test_nasty_input_is_a_400_and_leaves_no_request_row(
        env: dict[str, Any], roomy: Any, mode: str, over: dict[str, str], data: bytes,
        needle: str) -> None:
    before = request_rows(env)
    if mode == "binary":
        h = headers(env["key"], **{"ce-id": "nasty"} | over)
    else:
        h = {"Authorization": f"Bearer {env['key']}",
             "Content-Type": "application/cloudevents+json"}
    for _ in range(2):  # a retry is refused the same way
        assert_problem(roomy.post("/", headers=h, data=data), 400, needle)
    assert request_rows(env) == before


@pytest.mark.parametrize("rid", ["ab%00c", "%00", "not-a-uuid"])
def test_a_request_id_with_nul_or_not_a_uuid_is_400(env: dict[str, Any], rid: str) -> None:
    resp = env["client"].get(f"/v1/requests/{rid}",
                             headers={"Authorization": f"Bearer {env['key']}"})
    assert_problem(resp, 400, "request ids are the UUIDs")


def test_a_key_with_nul_is_401(env: dict[str, Any]) -> None:
    resp = env["client"].get("/v1/quota", headers={"Authorization": "Bearer qf_a\x00b_c"})
    assert_problem(resp, 401, "not valid")


def test_an_unreachable_database_is_503_with_retry_after(env: dict[str, Any]) -> None:
    down = replace(env["settings"], postgres_url="postgresql://nobody@127.0.0.1:1/x")
    app = create_app(down)
    client = app.test_client()
    resp = client.post("/", headers=headers(env["key"]), data=body())
    assert_problem(resp, 503, "a backing service failed")
    assert resp.headers["Retry-After"] == "5"
    assert client.get("/health/readiness").status_code == 503
    app.extensions["quotaflow"]["resources"].close()
