"""`GET /v1/usage` on the door over in-memory ports: a key reads only its own tenant's rows,
the same rows `quotaflow usage` renders; bad parameters are a 400 problem+json naming them."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Any

import pytest
from flask.testing import FlaskClient

from quotaflow.adapters.clock import FixedClock
from quotaflow.analytics.memory import MemoryUsageStore
from quotaflow.analytics.query import UsageQuery
from quotaflow.analytics.rollup import Batch
from quotaflow.events.payloads import LedgerEntry
from quotaflow.runtime.door.app import create_app
from quotaflow.settings import Settings
from tests.problems import assert_problem
from tests.unit.fakes import World

AT = datetime(2026, 11, 29, 12, 0, 45, tzinfo=UTC)


class Door:
    def __init__(self) -> None:
        world = World(FixedClock(AT))
        self.keys = {t: world.tenants.create_key(t, 600) for t in ("acme", "beta")}
        self.usage = MemoryUsageStore({"a1": ("m", "ka"), "b1": ("m", "kb")})
        self.usage.apply(Batch("g", [
            LedgerEntry(1, "acme", 1, "TokensReserved", "a1", "2026-11", 70, 0, AT),
            LedgerEntry(2, "beta", 1, "TokensReserved", "b1", "2026-11", 900, 0, AT),
            LedgerEntry(3, "acme", 2, "ReservationSettled", "a1", "2026-11", 30, 40, AT)]))
        self.client: FlaskClient = create_app(
            Settings(), world.door_ports(usage=self.usage)).test_client()

    def get(self, query: str = "", tenant: str = "acme") -> Any:
        return self.client.get(f"/v1/usage{query}",
                               headers={"Authorization": f"Bearer {self.keys[tenant]}"})


@pytest.fixture
def door() -> Door:
    return Door()


def test_a_key_reads_its_own_tenants_rows_and_nothing_of_another(door: Door) -> None:
    resp = door.get("?by=minute&group=key")
    assert resp.status_code == 200
    rows = resp.get_json()
    assert rows == door.usage.usage(UsageQuery("acme", "minute", "key"))
    assert [(r["tenant"], r["key"], r["requests"], r["charged_tokens"]) for r in rows] == \
        [("acme", "ka", 1, 30)]
    beta = door.get(tenant="beta").get_json()
    assert [(r["tenant"], r["reserved_tokens"]) for r in beta] == [("beta", 900)]


def test_group_by_groups_as_group_does(door: Door) -> None:
    rows = door.get("?by=minute&group_by=key").get_json()
    assert rows == door.get("?by=minute&group=key").get_json()
    assert [(r["key"], r["charged_usd"]) for r in rows] == [("ka", "0.000000")]


def test_naming_another_tenant_is_forbidden(door: Door) -> None:
    assert_problem(door.get("?tenant=beta"), 403, "beta")
    assert door.get("?tenant=acme").status_code == 200


def test_no_key_or_a_bad_key_is_401(door: Door) -> None:
    assert_problem(door.client.get("/v1/usage"), 401, "Authorization")
    assert_problem(door.client.get("/v1/usage", headers={"Authorization": "Bearer nope"}),
                   401, "not valid")


@pytest.mark.parametrize(("query", "named"), [
    ("?by=week", "'by'"), ("?group=tenant", "'group'"), ("?group_by=org", "'group_by'"),
    ("?from=soon", "'from'"),
    ("?from=2026-11-02&to=2026-11-01", "'to'"), ("?format=xml", "'format'"),
    ("?limit=5", "'limit'")])
def test_bad_parameters_are_400_naming_them(door: Door, query: str, named: str) -> None:
    assert_problem(door.get(query), 400, named)


def test_csv_carries_the_same_rows(door: Door) -> None:
    resp = door.get("?format=csv")
    assert resp.content_type.startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(resp.get_data(as_text=True))))
    assert [(r["tenant"], r["charged_tokens"]) for r in rows] == [("acme", "30")]
