"""Ledger benchmarks, each as a ratio against a baseline measured in the same run.

    .venv/bin/python benchmarks/bench_ledger.py [--requests 20000] [--batch 64] [--events 1000000]

(a) Decisions/s through reserve + settle, a polled batch per transaction (as the reserve and
    settle steps run), versus plain batched INSERTs of the same number of rows into a table of
    the same shape in the same PostgreSQL.
(b) Audit replay of a ledger of --events events (generated in SQL: grants, reservations,
    settlements), versus a bare server-side-cursor scan of the same rows."""

from __future__ import annotations

import argparse
import time

import psycopg

from events import db
from events.ledger import audit
from events.ledger.store import PostgresLedger, ReserveTokens, SettleReservation
from events.settings import Settings
from events.tenants import create_tenant


def decisions(url: str, n: int, batch: int, tenants: int) -> tuple[float, float]:
    db.recreate(url)
    conn = psycopg.connect(url, autocommit=True)
    names = [f"t{i}" for i in range(tenants)]
    for t in names:
        create_tenant(conn, t, 10**12)
    ledger = PostgresLedger(conn)
    started = time.perf_counter()
    for start in range(0, n, batch):
        ids = range(start, min(n, start + batch))
        ledger.reserve([ReserveTokens(names[i % tenants], f"r{i}", 100, "h") for i in ids])
        ledger.end([SettleReservation(names[i % tenants], f"r{i}", 60, "s") for i in ids])
    ledger_rate = 2 * n / (time.perf_counter() - started)

    conn.execute("CREATE TABLE raw_events (LIKE ledger_events INCLUDING DEFAULTS)")
    conn.execute("CREATE SEQUENCE raw_seq")
    conn.execute("ALTER TABLE raw_events ALTER seq SET DEFAULT nextval('raw_seq')")
    started = time.perf_counter()
    version = 0
    for start in range(0, 2 * n, batch):
        rows = []
        for i in range(start, min(2 * n, start + batch)):
            version += 1
            rows.append((names[i % tenants], version, "TokensReserved", f"x{i}", "2026-11", 100))
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany("INSERT INTO raw_events (tenant_id, stream_version, kind, request_id,"
                            " period, amount) VALUES (%s, %s, %s, %s, %s, %s)", rows)
    raw_rate = 2 * n / (time.perf_counter() - started)
    conn.close()
    return ledger_rate, raw_rate


def replay(url: str, events: int, tenants: int = 100) -> tuple[float, float, int]:
    db.recreate(url)
    pairs = (events - tenants) // 2
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO tenants (tenant_id, plan_period, grant_tokens, "
                     "rate_limit_per_min) SELECT 't' || g, 'month', 1000000000, 600 "
                     "FROM generate_series(0, %s - 1) g", (tenants,))
        conn.execute("INSERT INTO ledger_events (tenant_id, stream_version, kind, period, amount)"
                     " SELECT 't' || g, 1, 'QuotaGranted', '2026-11', 1000000000 "
                     "FROM generate_series(0, %s - 1) g", (tenants,))
        # Reservation i and its settlement: tenant i % tenants, versions 2.. in order.
        conn.execute(
            "INSERT INTO ledger_events (tenant_id, stream_version, kind, request_id, period, "
            "amount, released) SELECT 't' || (i %% %(t)s), 2 + 2 * (i / %(t)s) + k, "
            "CASE k WHEN 0 THEN 'TokensReserved' ELSE 'ReservationSettled' END, 'r' || i, "
            "'2026-11', CASE k WHEN 0 THEN 100 ELSE 60 END, CASE k WHEN 0 THEN 0 ELSE 40 END "
            "FROM generate_series(0, %(p)s - 1) i, generate_series(0, 1) k ORDER BY i, k",
            {"t": tenants, "p": pairs})
        conn.execute("ANALYZE ledger_events")
        started = time.perf_counter()
        with conn.transaction(), conn.cursor(name="scan") as cur:
            cur.itersize = 50_000
            cur.execute("SELECT seq, tenant_id, stream_version, kind, request_id, period, "
                        "amount, released FROM ledger_events ORDER BY seq")
            scanned = sum(1 for _ in cur)
        scan_s = time.perf_counter() - started
        started = time.perf_counter()
        result = audit.replay(conn)
        replay_s = time.perf_counter() - started
        assert result.ok, result.findings[:5]
        assert result.events == scanned
    return replay_s, scan_s, scanned


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--tenants", type=int, default=8)
    ap.add_argument("--events", type=int, default=1_000_000)
    args = ap.parse_args()
    base = Settings.from_env().postgres_url.rsplit("/", 1)[0]
    url = f"{base}/qf_bench_ledger"
    ledger_rate, raw_rate = decisions(url, args.requests, args.batch, args.tenants)
    print(f"(a) {args.requests} reserve + {args.requests} settle, batches of {args.batch}, "
          f"{args.tenants} tenants")
    print(f"    ledger decisions/s {ledger_rate:10.0f}")
    print(f"    raw batched INSERT rows/s {raw_rate:10.0f}")
    print(f"    ratio {ledger_rate / raw_rate:.2f} (goal >= 0.5)")
    replay_s, scan_s, n = replay(url, args.events)
    print(f"(b) audit replay of {n:,} ledger events: {replay_s:.1f} s "
          f"({n / replay_s:,.0f} events/s); bare cursor scan {scan_s:.1f} s; "
          f"replay/scan {replay_s / scan_s:.2f}x (goal < 60 s)")


if __name__ == "__main__":
    main()
