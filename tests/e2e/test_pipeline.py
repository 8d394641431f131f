"""The whole pipeline end to end, as local processes over real Kafka (Tansu), PostgreSQL,
Redis and HTTP."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid

import pytest
from confluent_kafka import Consumer, Producer

from quotaflow import client
from quotaflow.adapters import kafka
from quotaflow.adapters import postgres as db
from quotaflow.adapters import tenant_store as tenants
from quotaflow.devstack.stack import DevStack
from quotaflow.events.envelope import from_kafka
from quotaflow.events.payloads import LedgerEntry
from quotaflow.ledger.projection import RedisProjection
from quotaflow.ledger.store import PostgresLedger

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def new_tenant(stack: DevStack, tokens: int) -> tuple[str, str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    s = stack.settings
    with db.connect(s.postgres_url, autocommit=True) as conn:
        key = tenants.create_tenant(conn, name, tokens)
        RedisProjection.connect(s.redis_url).catch_up(PostgresLedger(conn))
    return name, key


def ask(stack: DevStack, key: str, prompt: str, max_tokens: int) -> dict[str, object]:
    accepted = client.submit(stack.admit_url, key, {"model": stack.settings.model_name,
                                                    "prompt": prompt, "max_tokens": max_tokens})
    return client.wait(stack.admit_url, key, str(accepted["request_id"]), timeout_s=60)


def read_topic(stack: DevStack, topic: str, want: int, timeout_s: float = 30) -> list[object]:
    c = Consumer(kafka.client_config(stack.settings, {
        "group.id": f"test-{uuid.uuid4().hex}", "auto.offset.reset": "earliest",
        "session.timeout.ms": 2000, "fetch.wait.max.ms": 50}))
    c.subscribe([topic])
    got: list[object] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(got) < want and time.monotonic() < deadline:
            got += [m for m in c.consume(100, 0.5) if not m.error()]
    finally:
        c.close()
    return got


def test_binary_cloudevent_is_answered_completed_with_usage_and_charged_exactly(
        stack: DevStack) -> None:
    _, key = new_tenant(stack, 1000)
    result = ask(stack, key, "the quick brown fox", max_tokens=3)
    assert result["status"] == "completed", result
    usage = result["usage"]
    assert isinstance(usage, dict)
    assert usage["prompt_tokens"] == 5  # stand-in: 4 words + 1 role marker
    assert usage["completion_tokens"] == 3
    assert usage["reserved_tokens"] == 5 + 3
    assert usage["charged_tokens"] == 8
    assert result["output"] == "fox brown quick"
    quota = client.quota(stack.admit_url, key)
    assert (quota["granted"], quota["reserved"], quota["spent"], quota["remaining"]) == \
        (1000, 0, 8, 992)


def test_tenant_whose_grant_is_too_small_is_rejected_and_charged_nothing(
        stack: DevStack) -> None:
    _, key = new_tenant(stack, 12)
    # The admit pre-check lets it through (12 >= max_tokens + 1); the ledger refuses 7 + 8.
    result = ask(stack, key, "a b c d e f", max_tokens=8)
    assert result["status"] == "rejected", result
    assert result["reason"] == "quota_exceeded"
    assert result["usage"]["charged_tokens"] == 0  # type: ignore[index]
    quota = client.quota(stack.admit_url, key)
    assert (quota["reserved"], quota["spent"], quota["remaining"]) == (0, 0, 12)


def test_undecodable_record_goes_to_the_dead_letter_topic_and_the_pipeline_goes_on(
        stack: DevStack) -> None:
    topic = stack.settings.topic("admitted")
    p = Producer(kafka.client_config(stack.settings))
    p.produce(topic, key=b"nobody", value=b"\x00garbage",
              headers=[("ce_specversion", b"1.0"), ("ce_id", b"junk-1"),
                       ("ce_source", b"/test"), ("ce_type", b"dev.quotaflow.request.admitted"),
                       ("ce_dataschema", b"urn:quotaflow:schema:admitted:v1"),
                       ("content-type", b"application/avro")])
    p.flush(10)
    dead = read_topic(stack, topic + ".dlq", 1)
    assert dead, "nothing reached the dead-letter topic"
    headers = dict(dead[0].headers())  # type: ignore[attr-defined]
    assert headers["qf_dlq_reason"].startswith(b"undecodable: Avro decode failed")
    assert headers["qf_dlq_step"] == b"estimate"
    assert headers["ce_id"] == b"junk-1"
    _, key = new_tenant(stack, 100)
    assert ask(stack, key, "still working", max_tokens=2)["status"] == "completed"


def test_committed_ledger_events_reach_the_ledger_topic(stack: DevStack) -> None:
    name, key = new_tenant(stack, 500)
    assert ask(stack, key, "count me", max_tokens=2)["status"] == "completed"
    records = read_topic(stack, stack.settings.topic("ledger"), 10_000, timeout_s=8)
    mine = [from_kafka(m.headers(), m.key(), m.value()) for m in records  # type: ignore[attr-defined]
            if m.key() == name.encode()]  # type: ignore[attr-defined]
    entries = [e.payload for e in mine]
    assert all(isinstance(e, LedgerEntry) for e in entries)
    kinds = [e.kind for e in entries if isinstance(e, LedgerEntry)]
    assert kinds[:3] == ["QuotaGranted", "TokensReserved", "ReservationSettled"], kinds
    assert [e.id for e in mine] == [f"ledger/{getattr(e.payload, 'seq', None)}" for e in mine]


def test_health_and_metrics_are_served(stack: DevStack) -> None:
    with urllib.request.urlopen(stack.admit_url + "/health/readiness", timeout=5) as r:
        assert json.loads(r.read())["status"] == "ready"
    with urllib.request.urlopen(stack.admit_url + "/metrics", timeout=5) as r:
        assert b"qf_admit_responses_total" in r.read()
