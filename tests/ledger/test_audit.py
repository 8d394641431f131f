"""`quotaflow audit`: replays the ledger, passes a clean one with byte-identical output, and
finds a tampered projection, a tampered snapshot and a missing settlement."""

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

from quotaflow.ledger import audit
from quotaflow.ledger.commands import ReserveTokens, SettleReservation
from quotaflow.ledger.projection import RedisProjection, balance_key
from quotaflow.ledger.store import PostgresLedger
from tests.ledger.conftest import LEDGER_REDIS_DB, make_tenant
from tests.services import redis_base


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
    audit.compare_requests(result, conn, None)
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
