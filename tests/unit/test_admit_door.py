"""admit's HTTP door on in-memory ports (Flask's test client, no services): every bad input is
a 4xx application/problem+json naming what was wrong; good input is stored, published and
answered 202; the rate limit and the quota pre-check answer 429 with Retry-After; reads show
only the key's own tenant; the billing period is the ledger's clock's."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from flask.testing import FlaskClient

from quotaflow.adapters.clock import FixedClock
from quotaflow.adapters.memory.requests import MemoryRequestStore
from quotaflow.events.catalog import REQUESTED_TYPE
from quotaflow.ports import Inserted, NewRequest, ReservedMark, ReserveTokens
from quotaflow.runtime.door.app import create_app
from quotaflow.settings import Settings
from tests.problems import MODEL, assert_problem, body
from tests.unit.fakes import World


class Door:
    """The door over in-memory ports, a ledger on the same clock, and three tenants' keys."""

    def __init__(self) -> None:
        world = World(FixedClock(datetime(2026, 11, 29, 12, 0, 45, tzinfo=UTC)))
        self.clock, self.tenants, self.publisher = world.clock, world.tenants, world.publisher
        self.gate, self.requests, self.ledger = world.gate, world.requests, world.ledger
        self.keys = {tenant: world.tenant(tenant, tokens, rate) for tenant, tokens, rate in (
            ("acme", 1000, 1000), ("tiny", 10, 600), ("chatty", 10_000, 3))}
        self.ports = world.door_ports()
        self.settings = replace(Settings(), max_body_bytes=4096, public_url="http://door.test")
        self.client: FlaskClient = create_app(self.settings, self.ports).test_client()

    def post(self, tenant: str | None = "acme", data: bytes | None = None,
             over: dict[str, str] | None = None) -> Any:
        return self.client.post("/", headers=headers(self.keys.get(tenant or ""), **(over or {})),
                                data=body() if data is None else data)

    def get(self, path: str, tenant: str = "acme") -> Any:
        return self.client.get(path, headers={"Authorization": f"Bearer {self.keys[tenant]}"})


@pytest.fixture
def door() -> Door:
    return Door()


def headers(key: str | None, **over: str) -> dict[str, str]:
    h = {"ce-specversion": "1.0", "ce-id": "e1", "ce-source": "/test", "ce-type": REQUESTED_TYPE,
         "Content-Type": "application/json"}
    if key:
        h["Authorization"] = f"Bearer {key}"
    h.update(over)
    return {k: v for k, v in h.items() if v != ""}






@pytest.mark.parametrize("over, status, needle", [
    ({"ce-id": ""}, 400, "ce-id"),
    ({"ce-source": ""}, 400, "ce-source"),
    ({"ce-type": ""}, 400, "ce-type"),
    ({"ce-specversion": ""}, 400, "ce-specversion"),
    ({"ce-specversion": "0.3"}, 400, "specversion must be 1.0"),
    ({"ce-type": "com.acme.x"}, 400, "unknown event type 'com.acme.x'"),
    ({"Content-Type": "text/plain"}, 415, "text/plain"),
])
def test_a_bad_cloudevent_is_a_problem_naming_it(door: Door, over: dict[str, str], status: int,
                                                 needle: str) -> None:
    assert_problem(door.post(over=over), status, needle)


@pytest.mark.parametrize("over, status, needle", [
    ({"max_tokens": 0}, 400, "max_tokens must be between"),
    ({"max_tokens": "8"}, 400, "max_tokens is required (an integer)"),
    ({"model": "gpt-9"}, 400, "unknown model 'gpt-9'"),
    ({"prompt": ""}, 400, "prompt must be a non-empty string"),
    ({"prompt": None}, 400, "exactly one of data.prompt or data.messages"),
    ({"temperature": 9}, 400, "temperature must be a number"),
    ({"seed": -1}, 400, "seed must be a non-negative integer"),
    ({"streams": True}, 400, "unknown field(s) in data: streams"),
    ({"prompt": "x" * 5000}, 413, "the limit is 4096"),
])
def test_bad_data_is_a_problem_naming_it(door: Door, over: dict[str, Any], status: int,
                                         needle: str) -> None:
    assert_problem(door.post(data=body(**over)), status, needle)
    assert door.publisher.published == []


def test_invalid_json_is_a_400(door: Door) -> None:
    assert_problem(door.post(data=b'{"model": '), 400, "not valid JSON")


def test_a_missing_key_is_401_with_a_bearer_challenge(door: Door) -> None:
    resp = door.post(tenant=None)
    assert_problem(resp, 401, "Authorization")
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_an_unknown_or_forged_key_is_401(door: Door) -> None:
    forged = door.keys["acme"].rsplit("_", 1)[0] + "_wrongsecret"
    for key in ("qf_nothere_secret", "not-a-key", forged):
        resp = door.client.post("/", headers=headers(key), data=body())
        assert_problem(resp, 401, "not valid")


def test_an_accepted_event_is_stored_published_and_answered_202(door: Door) -> None:
    resp = door.post()
    assert resp.status_code == 202, resp.get_data(as_text=True)
    out = resp.get_json()
    assert out["status_url"] == f"http://door.test/v1/requests/{out['request_id']}"
    assert resp.headers["Location"] == out["status_url"]
    (envelope,) = door.publisher.published
    assert (envelope.id, envelope.source, envelope.tenant) == (
        f"{out['request_id']}/admitted", "/quotaflow/admit", "acme")
    assert envelope.type.name == "admitted"
    status = door.get(f"/v1/requests/{out['request_id']}")
    assert status.status_code == 200
    assert status.get_json() == {
        "request_id": out["request_id"], "status": "queued", "output": None,
        "usage": {"prompt_tokens": None, "completion_tokens": None, "reserved_tokens": None,
                  "charged_tokens": None},
        "model": {"name": MODEL, "version": None}, "reason": None,
        "created_at": "2026-11-29T12:00:45+00:00", "updated_at": "2026-11-29T12:00:45+00:00"}


def test_a_structured_event_is_accepted(door: Door) -> None:
    envelope = {"specversion": "1.0", "id": "s-1", "source": "/test", "type": REQUESTED_TYPE,
                "datacontenttype": "application/json", "data": json.loads(body())}
    resp = door.client.post("/v1/requests", data=json.dumps(envelope), headers={
        "Authorization": f"Bearer {door.keys['acme']}",
        "Content-Type": "application/cloudevents+json"})
    assert resp.status_code == 202, resp.get_data(as_text=True)


def test_a_resend_is_the_same_request_and_republished_only_while_queued(door: Door) -> None:
    first, second = door.post(), door.post()
    assert first.status_code == second.status_code == 202
    rid = first.get_json()["request_id"]
    assert second.get_json()["request_id"] == rid
    assert [e.id for e in door.publisher.published] == [f"{rid}/admitted"] * 2
    door.requests.mark_reserved([ReservedMark(rid, 20, 12)])
    assert door.post().status_code == 202
    assert len(door.publisher.published) == 2


def test_a_changed_payload_under_the_same_event_id_is_409(door: Door) -> None:
    assert door.post().status_code == 202
    problem = assert_problem(door.post(data=body(max_tokens=9)), 409, "different payload")
    assert problem["type"].endswith("idempotency-conflict")


def test_the_rate_limit_answers_429_until_the_next_minute(door: Door) -> None:
    codes = [door.post("chatty", over={"ce-id": f"r{i}"}).status_code for i in range(3)]
    assert codes == [202, 202, 202]
    resp = door.post("chatty", over={"ce-id": "r3"})
    problem = assert_problem(resp, 429, "3 requests a minute")
    assert problem["type"].endswith("rate-limited")
    assert resp.headers["Retry-After"] == "15"  # the clock reads 12:00:45
    door.clock.advance(15)
    assert door.post("chatty", over={"ce-id": "r4"}).status_code == 202


def test_the_quota_precheck_answers_429_until_the_next_period(door: Door) -> None:
    resp = door.post("tiny", data=body(max_tokens=50))
    problem = assert_problem(resp, 429, "tenant tiny has 10 tokens left in period 2026-11",
                             "may need 51")
    assert problem["type"].endswith("quota-exhausted")
    # From 2026-11-29 12:00:45 to 2026-12-01 00:00:00.
    assert resp.headers["Retry-After"] == str(36 * 3600 - 45)
    assert door.requests.fetch("tiny", "any") is None and door.publisher.published == []


def test_the_quota_precheck_retries_after_the_tenants_own_month_ends_in_its_zone() -> None:
    world = World(FixedClock(datetime(2026, 11, 29, 12, 0, 45, tzinfo=UTC)))
    key = world.tenant("tokyo", 10, time_zone="Asia/Tokyo")
    client = create_app(Settings(), world.door_ports()).test_client()
    resp = client.post("/", headers=headers(key), data=body(max_tokens=50))
    assert_problem(resp, 429, "tenant tokyo has 10 tokens left in period 2026-11")
    # 21:00:45 in Tokyo; its December begins at 2026-12-01 00:00 JST, 2026-11-30 15:00 UTC,
    # nine hours before UTC's.
    assert resp.headers["Retry-After"] == str(27 * 3600 - 45)


def test_a_resend_of_an_accepted_event_is_202_past_the_rate_limit_and_the_quota(
        door: Door) -> None:
    first = [door.post("chatty", over={"ce-id": f"r{i}"}) for i in range(3)]
    assert door.post("chatty", over={"ce-id": "r3"}).status_code == 429
    again = door.post("chatty", over={"ce-id": "r0"})  # the same event, while over the limit
    assert again.status_code == 202, again.get_data(as_text=True)
    assert again.get_json()["request_id"] == first[0].get_json()["request_id"]
    # The same holds once the quota is gone: the ledger decides about the first send only.
    accepted = door.post("tiny", data=body(max_tokens=5))
    assert accepted.status_code == 202
    door.ledger.reserve([ReserveTokens("tiny", "elsewhere", 10, "h")])
    door.gate.projection.catch_up(door.ledger)
    assert door.post("tiny", data=body(max_tokens=5), over={"ce-id": "new"}).status_code == 429
    resent = door.post("tiny", data=body(max_tokens=5))
    assert resent.status_code == 202, resent.get_data(as_text=True)
    assert resent.get_json()["request_id"] == accepted.get_json()["request_id"]


def test_the_billing_period_is_the_ledgers_clock(door: Door) -> None:
    door.clock.at = datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC)
    assert door.get("/v1/quota", "tiny").get_json()["period"] == "2026-11"
    assert door.post("tiny", data=body(max_tokens=50)).status_code == 429
    door.clock.advance(1)  # a new month by the ledger's clock: granted nothing yet
    assert door.get("/v1/quota", "tiny").get_json()["period"] == "2026-12"
    assert door.post("tiny", data=body(max_tokens=50)).status_code == 202


def test_quota_reads_the_projected_balance(door: Door) -> None:
    resp = door.get("/v1/quota", "tiny")
    assert resp.status_code == 200
    body = resp.get_json()
    assert {k: v for k, v in body.items() if k != "levels"} == {
        "tenant": "tiny", "period": "2026-11", "granted": 10, "reserved": 0, "spent": 0,
        "remaining": 10}
    assert [lv["scope"] for lv in body["levels"]] == ["key", "tenant"]


def test_a_request_of_another_tenant_is_not_found(door: Door) -> None:
    rid = door.post().get_json()["request_id"]
    assert_problem(door.get(f"/v1/requests/{rid}", "tiny"), 404, rid)


def test_a_bus_that_does_not_confirm_is_503_and_the_resend_succeeds(door: Door) -> None:
    door.publisher.unavailable = True
    resp = door.post()
    assert_problem(resp, 503, "send the same event again")
    assert resp.headers["Retry-After"] == "2"
    door.publisher.unavailable = False
    assert door.post().status_code == 202
    assert len(door.publisher.published) == 1


def test_a_failing_backing_service_is_503_without_a_trace(door: Door) -> None:
    class Unreachable(MemoryRequestStore):
        def insert(self, request: NewRequest) -> Inserted:
            raise ConnectionError("connection refused")

    ports = replace(door.ports, requests=Unreachable())
    client = create_app(door.settings, ports).test_client()
    resp = client.post("/", headers=headers(door.keys["acme"]), data=body())
    assert_problem(resp, 503, "a backing service failed")
    assert "Traceback" not in resp.get_data(as_text=True)
    assert resp.headers["Retry-After"] == "5"


def test_an_event_id_whose_request_was_never_stored_takes_another_payload(door: Door) -> None:
    class Unreachable(MemoryRequestStore):
        def insert(self, request: NewRequest) -> Inserted:
            raise ConnectionError("connection refused")

    down = create_app(door.settings, replace(door.ports, requests=Unreachable())).test_client()
    assert down.post("/", headers=headers(door.keys["acme"]), data=body()).status_code == 503
    # The gate recorded the first payload when it let it through; nothing was stored.
    assert door.post(data=body(max_tokens=9)).status_code == 202
    assert_problem(door.post(data=body()), 409, "different payload")


def test_unknown_path_and_method_are_problems(door: Door) -> None:
    assert_problem(door.client.get("/nope"), 404)
    assert_problem(door.client.delete("/v1/quota"), 405)



def test_quota_lists_the_keys_levels_key_team_tenant_with_money_as_decimals(
        door: Door) -> None:
    key_id = door.keys["acme"].split("_")[1]
    door.ledger.add_team("acme", "ml", tokens=500, usd=5_000_000)
    door.ledger.add_key("acme", key_id, "ml", usd=1_500_000)
    door.ledger.set_price("m", 1_000_000, 2_000_000)
    door.ledger.reserve([ReserveTokens("acme", "r", 100, "h", key_id, "m", 40)])  # 40 + 120
    key, team, tenant = door.get("/v1/quota").get_json()["levels"]
    assert key == {"scope": "key", "id": key_id,
                   "tokens": {"limit": None, "reserved": 100, "spent": 0, "remaining": None},
                   "usd": {"limit": "1.500000", "reserved": "0.000160", "spent": "0.000000",
                           "remaining": "1.499840"}}
    assert (team["scope"], team["id"], team["tokens"]["remaining"]) == ("team", "ml", 400)
    assert (tenant["scope"], tenant["id"], tenant["tokens"]["limit"]) == ("tenant", "acme", 1000)
    assert tenant["usd"] == {"limit": None, "reserved": "0.000160", "spent": "0.000000",
                             "remaining": None}
