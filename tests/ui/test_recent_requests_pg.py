"""`GET /v1/requests`'s query on PostgreSQL: a tenant's own requests, newest first, at most
`limit`, each read back whole."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from quotaflow.adapters import postgres as db
from quotaflow.door.ui_routes import PostgresRecentRequests
from tests.services import fresh_database

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def test_recent_requests_are_the_tenants_own_newest_first_and_limited() -> None:
    url = fresh_database("qf_test_ui_recent")
    with db.connect(url, autocommit=True) as conn:
        for i, tenant in enumerate(["acme", "other", "acme", "acme", "other"]):
            conn.execute(
                "INSERT INTO requests (request_id, tenant_id, key_id, source, ce_id, "
                "payload_hash, status, model, prompt_tokens, completion_tokens, "
                "reserved_tokens, charged_tokens, created_at, updated_at) VALUES "
                "(%s, %s, 'k', '/s', %s, 'h', 'completed', 'm', 3, %s, 20, %s, %s, %s)",
                (f"r{i}", tenant, f"e{i}", i, 3 + i, T0 + timedelta(seconds=i),
                 T0 + timedelta(seconds=i)))
        recent = PostgresRecentRequests(lambda: conn)
        assert [v.request_id for v in recent.recent("acme", 10)] == ["r3", "r2", "r0"]
        assert [v.request_id for v in recent.recent("acme", 2)] == ["r3", "r2"]
        assert recent.recent("nobody", 10) == []
        newest = recent.recent("other", 1)[0]
        assert (newest.request_id, newest.status, newest.completion_tokens,
                newest.charged_tokens, newest.created_at) == ("r4", "completed", 4, 7,
                                                              T0 + timedelta(seconds=4))
