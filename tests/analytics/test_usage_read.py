"""Reading the roll-ups of a real history in PostgreSQL: `quotaflow usage` prints the same rows
as JSON, CSV and a table; `GET /v1/usage` on the real door gives a key its own tenant's rows and
never another's; the audit's check finds a tampered roll-up and counts lag apart."""

from __future__ import annotations

import csv
import io
import json
import threading
from dataclasses import replace
from typing import Any

import psycopg
import pytest

from quotaflow.analytics.check import check_rollups, compare_rollups
from quotaflow.analytics.consumer import AnalyticsConsumer
from quotaflow.analytics.query import UsageQuery
from quotaflow.analytics.store import PostgresUsageStore
from quotaflow.ledger.audit import Audit
from quotaflow.ledger.store import PostgresLedger
from quotaflow.runtime.door.app import create_app
from quotaflow.settings import Settings
from tests.analytics.conftest import History, make_history, quotaflow, wait
from tests.services import redis_base

REDIS_DB = 14


@pytest.fixture
def rolled(conn: psycopg.Connection[Any], settings: Settings) -> History:
    """A history rolled up by the consumer, in this process."""
    history = make_history(conn, settings, requests=60)
    store = PostgresUsageStore(conn)
    consumer = AnalyticsConsumer(settings, store, batch_max=200, poll_s=0.2)
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,))
    thread.start()
    try:
        wait("the roll-ups", lambda: check_rollups(conn).pending == 0 and int(
            conn.execute("SELECT count(*) FROM usage_outcomes").fetchone()[0])  # type: ignore[index]
            == len(history.completed))
    finally:
        stop.set()
        thread.join(30)
    return history


def cli(settings: Settings, *args: str) -> str:
    proc = quotaflow(settings, "usage", *args)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out.decode()
    return out.decode()


def test_the_cli_prints_the_same_rows_as_json_csv_and_a_table(
        conn: psycopg.Connection[Any], settings: Settings, rolled: History) -> None:
    as_json = json.loads(cli(settings, "--tenant", "acme", "--by", "day", "--group", "model",
                             "--format", "json"))
    assert as_json == PostgresUsageStore(conn).usage(UsageQuery("acme", "day", "model"))
    assert {r["model"] for r in as_json} == {None, "m-small", "m-large"}
    for row in as_json:
        assert {"tenant", "start", "requests", "prompt_tokens", "completion_tokens",
                "charged_tokens"} <= set(row)
    settled = conn.execute("SELECT sum(amount) FROM ledger_events WHERE tenant_id = 'acme' AND "
                           "kind = 'ReservationSettled'").fetchone()
    assert sum(r["charged_tokens"] for r in as_json) == int(settled[0])  # type: ignore[index]
    assert sum(r["prompt_tokens"] + r["completion_tokens"] for r in as_json) == \
        sum(rolled.tokens("acme"))
    as_csv = list(csv.DictReader(io.StringIO(cli(settings, "--tenant", "acme", "--by", "day",
                                                 "--group", "model", "--format", "csv"))))
    assert [(r["model"] or None, int(r["charged_tokens"])) for r in as_csv] == \
        [(r["model"], r["charged_tokens"]) for r in as_json]
    table = cli(settings, "--tenant", "acme", "--by", "day", "--group", "model").splitlines()
    assert table[0].split()[:3] == ["tenant", "start", "model"]
    assert table[-1] == f"{len(as_json)} rows"
    both = json.loads(cli(settings, "--format", "json", "--by", "day"))
    assert {r["tenant"] for r in both} == {"acme", "beta"}
    bad = quotaflow(settings, "usage", "--from", "yesterday")
    out, _ = bad.communicate(timeout=60)
    assert bad.returncode == 2 and b"--from" in out


def test_the_api_answers_a_key_with_its_own_tenants_rows_only(
        conn: psycopg.Connection[Any], settings: Settings, rolled: History) -> None:
    app = create_app(replace(settings, redis_url=f"{redis_base()}/{REDIS_DB}"))
    client = app.test_client()
    for tenant, other in (("acme", "beta"), ("beta", "acme")):
        auth = {"Authorization": f"Bearer {rolled.keys[tenant]}"}
        resp = client.get("/v1/usage?by=day&group=key", headers=auth)
        assert resp.status_code == 200, resp.get_data(as_text=True)
        rows = resp.get_json()
        assert rows == PostgresUsageStore(conn).usage(UsageQuery(tenant, "day", "key"))
        assert rows and {r["tenant"] for r in rows} == {tenant}
        forbidden = client.get(f"/v1/usage?tenant={other}", headers=auth)
        assert forbidden.status_code == 403
        assert other in forbidden.get_json()["detail"]
    assert client.get("/v1/usage").status_code == 401
    app.extensions["quotaflow"]["resources"].close()


def test_the_audit_check_finds_a_tampered_rollup_and_counts_lag_apart(
        conn: psycopg.Connection[Any], settings: Settings, rolled: History) -> None:
    assert check_rollups(conn).ok
    PostgresLedger(conn).grant("acme", 5)  # an event the consumer has not rolled up yet
    lagging = check_rollups(conn)
    assert (lagging.ok, lagging.pending) == (True, 1)
    conn.execute("UPDATE usage_rollups SET charged_tokens = charged_tokens + 1 WHERE ctid = "
                 "(SELECT ctid FROM usage_rollups WHERE tenant_id = 'acme' AND "
                 "charged_tokens > 0 LIMIT 1)")
    audit = Audit()
    compare_rollups(audit, conn, None)
    (finding,) = audit.findings
    assert "acme" in finding and "charged_tokens" in finding
    check = quotaflow(settings, "analytics", "check")
    out, _ = check.communicate(timeout=60)
    assert check.returncode == 1 and b"DIFFERENCE: acme" in out
