"""The usage page's routes on in-memory ports (Flask's test client, no services): admit serves
the page's static files with a strict content security policy, and `GET /v1/requests` lists
only the caller's own recent requests, newest first, with a bounded `limit`."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from flask.testing import FlaskClient

from quotaflow.adapters.clock import FixedClock
from quotaflow.events.catalog import REQUESTED_TYPE
from quotaflow.runtime.door.app import create_app
from quotaflow.runtime.door.usage_page import UI_DIR
from quotaflow.settings import Settings
from tests.problems import assert_problem, body
from tests.unit.fakes import World


class Door:
    def __init__(self) -> None:
        world = World(FixedClock(datetime(2026, 11, 29, 12, 0, 45, tzinfo=UTC)))
        self.clock, self.requests = world.clock, world.requests
        self.keys = {tenant: world.tenant(tenant, 10_000, 1000) for tenant in ("acme", "other")}
        ports = world.door_ports()
        settings = replace(Settings(), public_url="http://door.test")
        self.client: FlaskClient = create_app(settings, ports).test_client()

    def submit(self, tenant: str, ce_id: str) -> str:
        resp = self.client.post("/", data=body(), headers={
            "Authorization": f"Bearer {self.keys[tenant]}", "ce-specversion": "1.0",
            "ce-id": ce_id, "ce-source": "/ui-test", "ce-type": REQUESTED_TYPE,
            "Content-Type": "application/json"})
        assert resp.status_code == 202, resp.get_data(as_text=True)
        self.clock.advance(1)
        return str(resp.get_json()["request_id"])

    def recent(self, tenant: str = "acme", query: str = "") -> Any:
        return self.client.get(f"/v1/requests{query}",
                               headers={"Authorization": f"Bearer {self.keys[tenant]}"})


@pytest.fixture
def door() -> Door:
    return Door()


def test_the_page_and_its_files_are_served_under_a_strict_content_security_policy(
        door: Door) -> None:
    page = door.client.get("/ui/")
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    assert page.get_data() == (UI_DIR / "index.html").read_bytes()
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    for name, mimetype in (("app.js", "text/javascript"), ("style.css", "text/css"),
                           ("vendor/uplot/uPlot.iife.min.js", "text/javascript"),
                           ("vendor/uplot/uPlot.min.css", "text/css")):
        resp = door.client.get(f"/ui/{name}")
        assert resp.status_code == 200, name
        assert resp.mimetype == mimetype, name
    assert door.client.get("/ui").status_code in (301, 308)


def test_a_missing_page_file_or_a_path_outside_the_page_is_a_404_problem(door: Door) -> None:
    assert_problem(door.client.get("/ui/nothing-here.js"), 404)
    assert_problem(door.client.get("/ui/../usage_page.py"), 404)
    assert_problem(door.client.get("/ui/%2e%2e/usage_page.py"), 404)


def test_recent_requests_are_the_callers_own_newest_first(door: Door) -> None:
    mine = [door.submit("acme", f"e{i}") for i in range(3)]
    theirs = door.submit("other", "e0")
    resp = door.recent()
    assert resp.status_code == 200
    listed = resp.get_json()["requests"]
    assert [r["request_id"] for r in listed] == list(reversed(mine))
    assert theirs not in json.dumps(listed)
    assert {r["status"] for r in listed} == {"queued"}
    assert set(listed[0]["usage"]) == {"prompt_tokens", "completion_tokens", "reserved_tokens",
                                       "charged_tokens"}
    assert [r["request_id"] for r in door.recent(query="?limit=2").get_json()["requests"]] \
        == list(reversed(mine))[:2]


@pytest.mark.parametrize("limit", ["0", "101", "ten", "-1", "2.5"])
def test_a_limit_that_is_not_a_whole_number_from_1_to_100_is_a_400_naming_it(
        door: Door, limit: str) -> None:
    assert_problem(door.recent(query=f"?limit={limit}"), 400, "limit", repr(limit))


def test_recent_requests_need_a_valid_key(door: Door) -> None:
    assert_problem(door.client.get("/v1/requests"), 401, "Authorization")
    assert_problem(door.client.get("/v1/requests", headers={"Authorization": "Bearer nope"}),
                   401)
