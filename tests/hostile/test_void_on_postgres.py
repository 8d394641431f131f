"""Rule 8 on the real ledger: voiding a request the door answered 5xx decides in PostgreSQL
what the in-memory ledger decides (tests/hostile/test_retries.py): a queued request is closed so
its late reservation holds nothing, a reserved one is released so its late settlement charges
nothing, and one settled first is reported billed (the door answers it instead)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from quotaflow.adapters import postgres as db
from quotaflow.adapters import tenant_store as tenants
from quotaflow.adapters.request_store import PostgresRequestStore
from quotaflow.events.status import LedgerKind, RequestStatus
from quotaflow.ledger.store import PostgresLedger
from quotaflow.ports import NewRequest, ReserveTokens, SettleReservation
from quotaflow.runtime.door.void import Voider
from quotaflow.runtime.idempotency import end_digest
from tests.services import fresh_database

DATA = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


@pytest.fixture(scope="module")
def url() -> str:
    return fresh_database("qf_test_void")


@pytest.fixture
def conn(url: str) -> Iterator[psycopg.Connection[Any]]:
    with db.connect(url, autocommit=True) as c:
        yield c


def stored(conn: psycopg.Connection[Any]) -> tuple[str, str, PostgresLedger, Voider]:
    tenant = f"v-{uuid.uuid4().hex[:8]}"
    tenants.create_tenant(conn, tenant, 1000)
    rid = str(uuid.uuid4())
    requests = PostgresRequestStore(conn)
    requests.insert(NewRequest(rid, tenant, "k", "openai", rid, "h", "m", DATA,
                               datetime.now(UTC)))
    ledger = PostgresLedger(conn)
    return tenant, rid, ledger, Voider(ledger, requests, None)


def status(conn: psycopg.Connection[Any], tenant: str, rid: str) -> tuple[str, int | None]:
    view = PostgresRequestStore(conn).fetch(tenant, rid)
    assert view is not None
    return view.status, view.charged_tokens


def spent_and_reserved(ledger: PostgresLedger, tenant: str) -> tuple[int, int]:
    b = ledger.balance(tenant, ledger.current_period(tenant))
    return b.spent, b.reserved


def test_rule8_a_voided_queued_request_reserves_nothing_when_it_arrives_late(
        conn: psycopg.Connection[Any]) -> None:
    tenant, rid, ledger, voider = stored(conn)
    assert not voider.void(tenant, rid, "the door answered 503").billed
    late = ledger.reserve([ReserveTokens(tenant, rid, 50, "the real hash")])[0]
    assert late.kind != LedgerKind.TOKENS_RESERVED
    assert spent_and_reserved(ledger, tenant) == (0, 0)
    assert status(conn, tenant, rid) == (RequestStatus.REJECTED, 0)


def test_rule8_a_voided_reserved_request_is_charged_nothing_when_it_completes_late(
        conn: psycopg.Connection[Any]) -> None:
    tenant, rid, ledger, voider = stored(conn)
    ledger.reserve([ReserveTokens(tenant, rid, 50, "the real hash")])
    assert not voider.void(tenant, rid, "the door answered 504").billed
    late = ledger.end([SettleReservation(tenant, rid, 30, end_digest(rid))])[0]
    assert late.kind == LedgerKind.RESERVATION_RELEASED
    assert spent_and_reserved(ledger, tenant) == (0, 0)
    assert status(conn, tenant, rid) == (RequestStatus.FAILED, 0)


def test_rule8_a_request_settled_before_the_void_is_reported_billed(
        conn: psycopg.Connection[Any]) -> None:
    tenant, rid, ledger, voider = stored(conn)
    ledger.reserve([ReserveTokens(tenant, rid, 50, "the real hash")])
    ledger.end([SettleReservation(tenant, rid, 30, end_digest(rid))])
    assert voider.void(tenant, rid, "the door answered 503").billed
    assert spent_and_reserved(ledger, tenant) == (30, 0)
