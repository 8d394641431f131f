"""A client's resend is the same request, end to end: the same CloudEvent sent again while the
first is still queued, one after the other and from two threads at once, ends `completed`,
charged once, its record equal to the ledger, and the audit clean. And a request whose
`admitted` was never published (admit died after storing it) is re-driven by the reconciler
from PostgreSQL and ends; one that cannot be re-driven ends `failed` at its deadline.
The local stack on its own database `qf_test_resend` and Redis db index 4, re-driving after
2 s (so requests merely in flight are re-driven too, harmlessly)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer

from quotaflow import client
from quotaflow.adapters import kafka
from quotaflow.adapters import postgres as db
from quotaflow.adapters import tenant_store as tenants
from quotaflow.adapters.request_store import PostgresRequestStore
from quotaflow.devstack.stack import DevStack
from quotaflow.events.envelope import from_kafka
from quotaflow.ledger.projection import RedisProjection
from quotaflow.ledger.store import PostgresLedger
from quotaflow.ports import NewRequest
from tests.e2e.conftest import start_stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SOURCE = "/resend/test"
EVENTS = 24
REDRIVE_S, DEADLINE_S = 2, 45


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    s = start_stack(tmp_path_factory.mktemp("resend"), database="qf_test_resend", redis_db=4,
                    redrive_after_s=REDRIVE_S, request_deadline_s=DEADLINE_S)
    yield s
    s.down()


def new_tenant(stack: DevStack) -> tuple[str, str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    with db.connect(stack.settings.postgres_url, autocommit=True) as conn:
        key = tenants.create_tenant(conn, name, 100_000)
        RedisProjection.connect(stack.settings.redis_url).catch_up(PostgresLedger(conn))
    return name, key


def send(stack: DevStack, key: str, event_id: str) -> str:
    data = {"model": stack.settings.model_name, "prompt": f"resend {event_id} a b c",
            "max_tokens": 4}
    return str(client.submit(stack.admit_url, key, data, source=SOURCE,
                             event_id=event_id)["request_id"])


def ledger_charges(stack: DevStack, tenant: str) -> dict[str, tuple[int, int]]:
    """Per request id: (reservations, total settled) in the tenant's ledger."""
    with db.connect(stack.settings.postgres_url) as conn:
        rows = conn.execute(
            "SELECT request_id, count(*) FILTER (WHERE kind = 'TokensReserved'), "
            "coalesce(sum(amount) FILTER (WHERE kind = 'ReservationSettled'), 0) "
            "FROM ledger_events WHERE tenant_id = %s AND request_id IS NOT NULL "
            "GROUP BY request_id", (tenant,)).fetchall()
    return {str(r): (int(n), int(c)) for r, n, c in rows}


def admitted_published(stack: DevStack, request_ids: set[str], want: int) -> int:
    """How many `admitted` records of `request_ids` admit published (reading until `want`)."""
    c = Consumer(kafka.client_config(stack.settings, {
        "group.id": f"test-{uuid.uuid4().hex}", "auto.offset.reset": "earliest",
        "session.timeout.ms": 2000, "fetch.wait.max.ms": 50}))
    c.subscribe([stack.settings.topic("admitted")])
    seen = 0
    deadline = time.monotonic() + 20
    try:
        while seen < want and time.monotonic() < deadline:
            for m in c.consume(200, 0.5):
                if m.error():
                    continue
                env = from_kafka(m.headers(), m.key(), m.value())
                seen += env.source == "/quotaflow/admit" and env.payload.request_id in request_ids
    finally:
        c.close()
    return seen


def audit(stack: DevStack, tenant: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **stack.settings.as_env()}
    return subprocess.run([sys.executable, "-m", "quotaflow", "audit", "--tenant", tenant],
                          env=env, capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])


def assert_charged_once(stack: DevStack, tenant: str, key: str,
                        request_ids: set[str]) -> None:
    # Some resends found their request still queued and were published again: the case.
    assert admitted_published(stack, request_ids, len(request_ids) + 1) > len(request_ids)
    ended = {rid: client.wait(stack.admit_url, key, rid, timeout_s=90) for rid in request_ids}
    charges = ledger_charges(stack, tenant)
    for rid, view in ended.items():
        usage: dict[str, Any] = view["usage"]
        assert view["status"] == "completed", view
        assert charges[rid] == (1, usage["charged_tokens"]), (rid, charges[rid], usage)
    assert set(charges) == request_ids
    quota = client.quota(stack.admit_url, key)
    assert (quota["reserved"], quota["spent"]) == (
        0, sum(v["usage"]["charged_tokens"] for v in ended.values()))
    result = audit(stack, tenant)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_same_event_sent_again_while_queued_is_charged_once(stack: DevStack) -> None:
    tenant, key = new_tenant(stack)
    ids = [f"seq-{i}" for i in range(EVENTS)]
    first = [send(stack, key, e) for e in ids]  # all queued before any ends
    again = [send(stack, key, e) for e in ids]
    assert again == first
    assert_charged_once(stack, tenant, key, set(first))


def test_the_same_events_sent_from_two_threads_at_once_are_charged_once(
        stack: DevStack) -> None:
    tenant, key = new_tenant(stack)
    ids = [f"par-{i}" for i in range(EVENTS)]
    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(lambda _: [send(stack, key, e) for e in ids], range(2))
    assert a == b
    assert_charged_once(stack, tenant, key, set(a))


def test_a_request_whose_admitted_was_never_published_is_re_driven_and_ends(
        stack: DevStack) -> None:
    tenant, key = new_tenant(stack)
    lost = str(uuid.uuid4())
    data = {"model": stack.settings.model_name,
            "messages": [{"role": "user", "content": "lost on the way"}], "max_tokens": 3,
            "temperature": None, "top_p": None, "seed": None}
    with db.connect(stack.settings.postgres_url, autocommit=True) as conn:
        now = conn.execute("SELECT now()").fetchone()
        assert now is not None
        PostgresRequestStore(conn).insert(NewRequest(
            lost, tenant, "k", SOURCE, lost, "h", data["model"], data, now[0]))
    view = client.wait(stack.admit_url, key, lost, timeout_s=60)
    assert view["status"] == "completed", view
    assert ledger_charges(stack, tenant) == {lost: (1, view["usage"]["charged_tokens"])}
    result = audit(stack, tenant)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_request_that_cannot_be_re_driven_ends_rejected_at_its_deadline(
        stack: DevStack) -> None:
    tenant, key = new_tenant(stack)
    stuck = str(uuid.uuid4())
    with db.connect(stack.settings.postgres_url, autocommit=True) as conn:
        conn.execute("INSERT INTO requests (request_id, tenant_id, key_id, source, ce_id, "
                     "payload_hash, status, model, created_at) VALUES (%s, %s, 'k', %s, %s, "
                     "'h', 'queued', 'm', now() - make_interval(secs => %s))",
                     (stuck, tenant, SOURCE, stuck, DEADLINE_S - 5))
    view = client.wait(stack.admit_url, key, stuck, timeout_s=60)
    assert (view["status"], view["usage"]["charged_tokens"]) == ("rejected", 0), view
    assert str(view["reason"]).startswith("deadline")
    result = audit(stack, tenant)
    assert result.returncode == 0, result.stdout + result.stderr
