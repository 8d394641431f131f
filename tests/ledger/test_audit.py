"""`quotaflow audit`: replays the ledger, passes a clean one with byte-identical output, and
finds a tampered projection (a tenant's balance or any budget level), a tampered snapshot,
and every request record, whatever its status, that disagrees with its ledger events (or is
still open past the deadline)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from typing import Any

import psycopg
import pytest

from quotaflow.adapters import budget_store as budgets_db
from quotaflow.adapters import tenant_store as tenants
from quotaflow.events.status import LevelScope
from quotaflow.ledger import audit
from quotaflow.ledger.audit_levels import compare_level_projection, compare_levels
from quotaflow.ledger.audit_records import compare_requests
from quotaflow.ledger.budgets import parse_usd
from quotaflow.ledger.commands import ReleaseReservation, ReserveTokens, SettleReservation
from quotaflow.ledger.level_projection import level_key
from quotaflow.ledger.projection import RedisProjection, balance_key
from quotaflow.ledger.store import PostgresLedger
from tests.ledger.conftest import LEDGER_REDIS_DB, make_tenant
from tests.services import redis_base

DEADLINE_S = 900


def record(conn: psycopg.Connection[Any], request_id: str, tenant: str, status: str,
           charged: int | None, age_s: int = 0) -> None:
    """A request record as the steps leave it, admitted `age_s` seconds ago."""
    conn.execute("INSERT INTO requests (request_id, tenant_id, key_id, source, ce_id, "
                 "payload_hash, status, model, charged_tokens, created_at) VALUES (%s, %s, "
                 "'k', '/s', %s, 'h', %s, 'm', %s, now() - make_interval(secs => %s))",
                 (request_id, tenant, request_id, status, charged, age_s))


@pytest.fixture
def history(conn: psycopg.Connection[Any], ledger: PostgresLedger,
            projection: RedisProjection) -> str:
    make_tenant(conn, "aud", 1000)
    make_tenant(conn, "bud", 50)
    ledger.reserve([ReserveTokens("aud", f"a{i}", 100, "h") for i in range(5)])
    ledger.reserve([ReserveTokens("bud", "b1", 80, "h")])  # rejected
    ledger.end([SettleReservation("aud", f"a{i}", 40, "s") for i in range(3)])
    for i in range(3):
        conn.execute("INSERT INTO requests (request_id, tenant_id, key_id, source, ce_id, "
                     "payload_hash, status, model, charged_tokens) VALUES (%s, 'aud', 'k', "
                     "'/s', %s, 'h', 'completed', 'm', 40)", (f"a{i}", f"a{i}"))
    projection.catch_up(ledger)
    return ledger.current_period("aud")


def run_audit(conn: psycopg.Connection[Any], projection: RedisProjection) -> audit.Audit:
    result = audit.replay(conn)
    audit.compare_snapshot(result, conn, None, None)
    audit.compare_projection(result, projection, None, None)
    compare_requests(result, conn, None, DEADLINE_S)
    return result


def test_clean_ledger_passes_with_the_right_statement(
        conn: psycopg.Connection[Any], projection: RedisProjection, history: str) -> None:
    result = run_audit(conn, projection)
    assert result.ok, result.findings
    s = result.statements[("aud", history)]
    assert (s.granted, s.reserved, s.settled, s.charged, s.released, s.open, s.remaining) == \
        (1000, 500, 3, 120, 180, 200, 680)
    assert result.statements[("bud", history)].rejected == 1


def test_tampered_projection_is_found(conn: psycopg.Connection[Any],
                                      projection: RedisProjection, history: str) -> None:
    projection.redis.hincrby(balance_key("aud", history), "spent", -40)
    findings = run_audit(conn, projection).findings
    assert any("aud" in f and "Redis projection" in f for f in findings), findings


def test_tampered_balances_snapshot_is_found(conn: psycopg.Connection[Any],
                                             projection: RedisProjection, history: str) -> None:
    conn.execute("UPDATE balances SET spent = spent - 1 WHERE tenant_id = 'aud'")
    findings = run_audit(conn, projection).findings
    assert any("balances table" in f for f in findings), findings


def test_missing_settlement_is_found(conn: psycopg.Connection[Any],
                                     projection: RedisProjection, history: str) -> None:
    conn.execute("DELETE FROM ledger_events WHERE kind = 'ReservationSettled' "
                 "AND request_id = 'a1'")
    findings = run_audit(conn, projection).findings
    assert any("a1" in f and "missing settlement" in f for f in findings), findings


def test_cli_output_is_byte_identical_across_runs_and_exits_nonzero_on_a_difference(
        ledger_url: str, conn: psycopg.Connection[Any], projection: RedisProjection,
        history: str) -> None:
    env = {**os.environ, "POSTGRES_URL": ledger_url,
           "REDIS_URL": f"{redis_base()}/{LEDGER_REDIS_DB}"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "quotaflow", "audit", *args], env=env,
                              capture_output=True, text=True, timeout=120)

    first, second = cli(), cli()
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout == second.stdout
    as_json = json.loads(cli("--format", "json").stdout)
    assert as_json["ok"] is True and len(as_json["statements"]) == 2
    rows = list(csv.DictReader(io.StringIO(cli("--format", "csv", "--tenant", "aud").stdout)))
    assert [(r["tenant"], r["charged"]) for r in rows] == [("aud", "120")]
    projection.redis.hincrby(balance_key("aud", history), "reserved", 5)
    bad = cli()
    assert bad.returncode == 1
    assert "DIFFERENCE" in bad.stdout
    projection.redis.hincrby(balance_key("aud", history), "reserved", -5)
    projection.redis.hincrby(level_key("aud", LevelScope.TENANT, "aud", history),
                             "spent_tokens", 1)
    bad = cli()
    assert bad.returncode == 1
    assert (f"tenant aud {history}: spent_tokens projected in Redis 121 != ledger replay 120"
            in bad.stdout)


@pytest.fixture
def every_status(conn: psycopg.Connection[Any], ledger: PostgresLedger,
                 projection: RedisProjection, history: str) -> None:
    """A consistent record of each status beside the history's completed ones."""
    make_tenant(conn, "cud", 1000)
    ledger.reserve([ReserveTokens("cud", rid, 10, "h") for rid in ("rel", "exp", "open")])
    ledger.end([ReleaseReservation("cud", "rel", "oom", "e")])
    conn.execute("UPDATE reservations SET reserved_at = now() - interval '1 hour' "
                 "WHERE request_id = 'exp'")
    ledger.expire_stale(60)
    record(conn, "b1", "bud", "rejected", 0)  # a RequestRejected in the ledger
    record(conn, "poison", "cud", "rejected", 0)  # unprocessable: nothing reserved
    record(conn, "rel", "cud", "failed", 0)
    record(conn, "exp", "cud", "expired", 0)
    record(conn, "open", "cud", "reserved", None, age_s=DEADLINE_S - 60)
    record(conn, "new", "cud", "queued", None)
    projection.catch_up(ledger)


def test_a_record_of_every_status_that_agrees_with_the_ledger_passes(
        conn: psycopg.Connection[Any], projection: RedisProjection, every_status: None) -> None:
    result = run_audit(conn, projection)
    assert result.ok, result.findings


@pytest.mark.parametrize(("tamper", "finding"), [
    # The resend bug: billed by the ledger, told "rejected".
    ("UPDATE requests SET status = 'rejected', charged_tokens = 0 WHERE request_id = 'a0'",
     "a0 recorded rejected but the ledger charged 40"),
    ("UPDATE requests SET status = 'failed', charged_tokens = 0 WHERE request_id = 'a1'",
     "a1 recorded failed but the ledger charged 40"),
    ("UPDATE requests SET charged_tokens = 41 WHERE request_id = 'a2'",
     "a2 recorded charged 41, the ledger charged 40"),
    ("UPDATE requests SET status = 'failed', charged_tokens = 0 WHERE request_id = 'open'",
     "open recorded failed but its reservation is still open"),
    ("UPDATE requests SET status = 'rejected', charged_tokens = 0 WHERE request_id = 'open'",
     "open recorded rejected but its reservation is still open"),
    ("UPDATE requests SET charged_tokens = 5 WHERE request_id = 'rel'",
     "rel recorded failed with a charge of 5"),
    ("UPDATE requests SET charged_tokens = 3 WHERE request_id = 'b1'",
     "b1 recorded rejected with a charge of 3"),
    ("UPDATE requests SET status = 'completed', charged_tokens = 0 WHERE request_id = 'exp'",
     "exp recorded completed with no ReservationSettled"),
    ("UPDATE requests SET created_at = created_at - interval '2 minutes' "
     "WHERE request_id = 'open'",
     "open still reserved past the deadline of 900 s"),
    ("UPDATE requests SET created_at = now() - interval '1 hour' WHERE request_id = 'new'",
     "new still queued past the deadline of 900 s"),
    ("DELETE FROM requests WHERE request_id = 'a1'",
     "a1 charged 40 by the ledger has no request record"),
    ("UPDATE requests SET status = 'lost' WHERE request_id = 'new'",
     "new has an unknown status 'lost'"),
])
def test_a_request_record_that_disagrees_with_the_ledger_is_found(
        conn: psycopg.Connection[Any], projection: RedisProjection, every_status: None,
        tamper: str, finding: str) -> None:
    conn.execute(tamper)
    findings = run_audit(conn, projection).findings
    assert any(finding in f for f in findings), findings
    assert len(findings) == 1, findings


def test_cli_exits_nonzero_for_a_rejected_record_the_ledger_charged(
        ledger_url: str, conn: psycopg.Connection[Any], every_status: None) -> None:
    env = {**os.environ, "POSTGRES_URL": ledger_url, "QF_REQUEST_DEADLINE_S": "900"}
    ok = subprocess.run([sys.executable, "-m", "quotaflow", "audit", "--no-projection"],
                        env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    conn.execute("UPDATE requests SET status = 'rejected', charged_tokens = 0 "
                 "WHERE request_id = 'a0'")
    bad = subprocess.run([sys.executable, "-m", "quotaflow", "audit", "--no-projection",
                          "--tenant", "aud"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 1
    assert "DIFFERENCE: aud: request a0 recorded rejected but the ledger charged 40" in bad.stdout


def test_the_cli_rebuilds_and_audits_a_projection_on_a_redis_cluster(
        ledger_url: str, conn: psycopg.Connection[Any], history: str) -> None:
    from tests.redis_servers import client, cluster_url

    on_cluster = RedisProjection(client("redis-cluster", 0))
    env = {**os.environ, "POSTGRES_URL": ledger_url, "REDIS_URL": cluster_url(),
           "QF_REDIS_MODE": "cluster"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "quotaflow", *args], env=env,
                              capture_output=True, text=True, timeout=120)

    rebuilt = cli("projection", "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert run_audit(conn, on_cluster).ok
    assert cli("audit").returncode == 0
    on_cluster.redis.hincrby(balance_key("bud", history), "granted", 1)
    bad = cli("audit")
    assert bad.returncode == 1 and "DIFFERENCE" in bad.stdout


def test_a_projected_level_that_differs_is_found_naming_scope_id_field_and_both_values(
        conn: psycopg.Connection[Any], ledger: PostgresLedger,
        projection: RedisProjection) -> None:
    make_tenant(conn, "lev", 10_000)
    budgets_db.create_team(conn, "lev", "ml")
    key = tenants.create_key(conn, "lev", team="ml").split("_")[1]
    budgets_db.set_price(conn, "m", parse_usd("1"), parse_usd("2"))
    # 40 input + 60 output tokens: 160 micro-dollars each; l0 settles 40 + 10 (60 of them)
    ledger.reserve([ReserveTokens("lev", f"l{i}", 100, "h", key, "m", 40) for i in range(2)])
    ledger.end([SettleReservation("lev", "l0", 50, "s")])
    projection.catch_up(ledger)

    def findings(tenant: str | None = None) -> list[str]:
        result = audit.replay(conn, tenant)
        levels = compare_levels(result, conn, tenant)
        compare_level_projection(result, projection.levels(tenant), levels, None)
        return result.findings

    assert findings() == []
    period = ledger.current_period("lev")
    projection.redis.hincrby(level_key("lev", LevelScope.TEAM, "lev/ml", period),
                             "reserved_usd", -7)
    projection.redis.delete(level_key("lev", LevelScope.KEY, key, period))
    lost = [f"key {key} {period}: {field} projected in Redis 0 != ledger replay {n}"
            for field, n in (("reserved_tokens", 100), ("spent_tokens", 50),
                             ("reserved_usd", 160), ("spent_usd", 60))]
    tampered = f"team lev/ml {period}: reserved_usd projected in Redis 153 != ledger replay 160"
    assert findings() == findings("lev") == [*lost, tampered]
    projection.rebuild(ledger)
    assert findings() == []
