"""Migration 0002 on a database that ran 0001 with data in it."""

from __future__ import annotations

import psycopg

from quotaflow.adapters import postgres as db
from quotaflow.events.resources import data_path
from tests.services import pg_base


def test_migration_0002_keeps_recorded_outcomes_and_open_and_expired_reservations() -> None:
    url = f"{pg_base()}/qf_test_migrations"
    with psycopg.connect(f"{pg_base()}/postgres", autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS qf_test_migrations WITH (FORCE)")
        admin.execute("CREATE DATABASE qf_test_migrations")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE schema_migrations (version text PRIMARY KEY, "
                     "applied_at timestamptz NOT NULL DEFAULT now())")
        conn.execute(data_path("migrations").joinpath("0001_ledger.sql").read_text())
        conn.execute("INSERT INTO schema_migrations (version) VALUES ('0001_ledger')")
        conn.execute(
            "INSERT INTO ledger_commands VALUES ('r1', 'reserve', 'h1', '{\"request_id\": \"r1\","
            " \"tenant\": \"a\", \"kind\": \"TokensReserved\", \"period\": \"2026-11\", "
            "\"amount\": 5, \"released\": 0, \"seq\": 7, \"reason\": null, \"reserved\": 5}'), "
            "('r2', 'end', 'h2', '{\"request_id\": \"r2\", \"tenant\": \"a\", \"kind\": null, "
            "\"period\": \"2026-11\", \"amount\": 0, \"released\": 0, \"seq\": 0, "
            "\"reason\": \"reservation_expired\", \"reserved\": 9}')")
        conn.execute(
            "INSERT INTO reservations (request_id, tenant_id, period, amount, reserved_at, ended)"
            " VALUES ('r1', 'a', '2026-11', 5, now(), NULL), "
            "('r2', 'a', '2026-11', 9, now(), 'ReservationExpired'), "
            "('r3', 'a', '2026-11', 7, now(), 'ReservationSettled')")

    assert db.migrate(url)[:2] == ["0002_ledger_functions", "0003_ledger_utc_periods"]

    with psycopg.connect(url) as conn:
        commands = conn.execute(
            "SELECT request_id, command, payload_hash, tenant, kind, period, amount, released, "
            "seq, reason, reserved FROM ledger_commands ORDER BY request_id").fetchall()
        assert commands == [
            ("r1", "reserve", "h1", "a", "TokensReserved", "2026-11", 5, 0, 7, None, 5),
            ("r2", "end", "h2", "a", None, "2026-11", 0, 0, 0, "reservation_expired", 9)]
        kept = conn.execute("SELECT request_id, amount, expired FROM reservations "
                            "ORDER BY request_id").fetchall()
        assert kept == [("r1", 5, False), ("r2", 9, True)]
    assert db.migrate(url) == []


def test_migration_0006_keeps_todays_tenants_and_open_reservations_working() -> None:
    from quotaflow.ledger import audit
    from quotaflow.ledger.audit_levels import compare_levels
    from quotaflow.ledger.commands import ReserveTokens, SettleReservation
    from quotaflow.ledger.store import PostgresLedger

    url = f"{pg_base()}/qf_test_migration_0006"
    with psycopg.connect(f"{pg_base()}/postgres", autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS qf_test_migration_0006 WITH (FORCE)")
        admin.execute("CREATE DATABASE qf_test_migration_0006")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE schema_migrations (version text PRIMARY KEY, "
                     "applied_at timestamptz NOT NULL DEFAULT now())")
        for path in sorted(data_path("migrations").glob("000[1-5]_*.sql")):
            conn.execute(path.read_text())
            conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (path.stem,))
        conn.execute("INSERT INTO tenants (tenant_id, plan_period, grant_tokens, "
                     "rate_limit_per_min) VALUES ('a', 'month', 100, 60)")
        conn.execute("INSERT INTO ledger_streams (tenant_id) VALUES ('a')")
        conn.execute("INSERT INTO api_keys (key_id, tenant_id, secret_hash) "
                     "VALUES ('k', 'a', 'x')")
        conn.execute("SELECT * FROM ledger_reserve(ARRAY['a'], ARRAY['old'], "
                     "ARRAY[60::bigint], ARRAY['h'])")

    assert db.migrate(url)[0] == "0006_budget_levels"  # (and any later ones)

    with psycopg.connect(url, autocommit=True) as conn:
        ledger = PostgresLedger(conn)
        (over,) = ledger.reserve([ReserveTokens("a", "new", 50, "h", "k", "m", 10)])
        assert over.reason == "quota_exceeded"  # the old reservation still holds its 60
        (s,) = ledger.end([SettleReservation("a", "old", 20, "s")])
        assert s.accepted and (s.amount, s.released) == (20, 40)
        (ok,) = ledger.reserve([ReserveTokens("a", "new2", 50, "h", "k", "m", 10)])
        assert ok.accepted
        result = audit.replay(conn)
        audit.compare_snapshot(result, conn, None, None)
        compare_levels(result, conn, None)
        assert result.findings == []
        row = conn.execute("SELECT reserved_tokens, spent_tokens FROM level_balances "
                           "WHERE scope = 'tenant' AND level_id = 'a'").fetchone()
        assert row == (50, 20)
