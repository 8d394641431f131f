"""Ledger benchmarks, each as a ratio against a baseline measured in the same run.

    python -m benchmarks.bench_ledger [--requests 20000] [--batch 256] [--rounds 6]

On POSTGRES_URL's PostgreSQL when it answers, else on an embedded one started for the run.

(a) Decisions/s through reserve + settle, a polled batch per ledger call (as the reserve and
    settle steps run), versus plain batched INSERTs of the same number of rows into a table of
    the same columns (no indexes) in the same PostgreSQL, alternating in rounds.
(b) Audit replay of a ledger of --events events (generated in SQL: grants, reservations,
    settlements), versus a bare server-side-cursor scan of the same rows.
(c) With --levels: decisions/s through reserve + settle of requests held at three levels with
    money (a key with its limits, in a team with its limits, a tenant with a money limit, a
    priced model) versus the same calls held at the tenant alone (no key, no price), in the
    same ledger, alternating in rounds."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import psycopg

from benchmarks.services import services
from quotaflow.adapters import budget_store
from quotaflow.adapters import postgres as db
from quotaflow.adapters.tenant_store import create_key, create_tenant
from quotaflow.ledger import audit
from quotaflow.ledger.commands import ReserveTokens, SettleReservation
from quotaflow.ledger.store import PostgresLedger
from quotaflow.settings import Settings


def decisions(url: str, n: int, batch: int, tenants: int, rounds: int
              ) -> list[tuple[float, float]]:
    """(ledger decisions/s, raw rows/s) per round. The two alternate in rounds, each round
    starting with the other one, so that a change in the machine's speed (disk, neighbours)
    during the run falls on both."""
    db.recreate(url)
    conn = psycopg.connect(url, autocommit=True)
    names = [f"t{i}" for i in range(tenants)]
    for t in names:
        create_tenant(conn, t, 10**12)
    conn.execute("CREATE TABLE raw_events (LIKE ledger_events INCLUDING DEFAULTS)")
    conn.execute("CREATE SEQUENCE raw_seq")
    conn.execute("ALTER TABLE raw_events ALTER seq SET DEFAULT nextval('raw_seq')")
    ledger = PostgresLedger(conn)
    version = 0

    def run_ledger(start: int, stop: int) -> float:
        began = time.perf_counter()
        for first in range(start, stop, batch):
            ids = range(first, min(stop, first + batch))
            ledger.reserve([ReserveTokens(names[i % tenants], f"r{i}", 100, "h") for i in ids])
            ledger.end([SettleReservation(names[i % tenants], f"r{i}", 60, "s") for i in ids])
        return 2 * (stop - start) / (time.perf_counter() - began)

    def run_raw(start: int, stop: int) -> float:
        nonlocal version
        began = time.perf_counter()
        for first in range(2 * start, 2 * stop, batch):
            rows = []
            for i in range(first, min(2 * stop, first + batch)):
                version += 1
                rows.append((names[i % tenants], version, "TokensReserved", f"x{i}", "2026-11",
                             100))
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany("INSERT INTO raw_events (tenant_id, stream_version, kind, "
                                "request_id, period, amount) VALUES (%s, %s, %s, %s, %s, %s)",
                                rows)
        return 2 * (stop - start) / (time.perf_counter() - began)

    warm = 2 * batch  # plans, caches and the first pages of every index
    run_ledger(n, n + warm)
    run_raw(n, n + warm)
    per_round = n // rounds
    results = []
    for r in range(rounds):
        start, stop = r * per_round, (r + 1) * per_round
        if r % 2 == 0:
            ledger_rate = run_ledger(start, stop)
            raw_rate = run_raw(start, stop)
        else:
            raw_rate = run_raw(start, stop)
            ledger_rate = run_ledger(start, stop)
        results.append((ledger_rate, raw_rate))
        print(f"    round {r + 1}/{rounds}: ledger {ledger_rate:8.0f} decisions/s, raw "
              f"{raw_rate:8.0f} rows/s, ratio {ledger_rate / raw_rate:.2f}", flush=True)
    conn.close()
    return results


def levels(url: str, n: int, batch: int, tenants: int, rounds: int
           ) -> list[tuple[float, float]]:
    """(three levels with money decisions/s, tenant-only decisions/s) per round."""
    db.recreate(url)
    conn = psycopg.connect(url, autocommit=True)
    names = [f"t{i}" for i in range(tenants)]
    keys = {}
    for t in names:
        create_tenant(conn, t, 10**12, usd=10**15)
        budget_store.create_team(conn, t, "ml", tokens=10**12, usd=10**15)
        keys[t] = [create_key(conn, t, team="ml", tokens=10**12, usd=10**15).split("_")[1]
                   for _ in range(4)]
    budget_store.set_price(conn, "m", 150_000, 600_000)
    ledger = PostgresLedger(conn)

    def run(start: int, stop: int, held: bool) -> float:
        began = time.perf_counter()
        for first in range(start, stop, batch):
            ids = range(first, min(stop, first + batch))
            ledger.reserve([ReserveTokens(
                names[i % tenants], f"r{i}", 100, "h",
                keys[names[i % tenants]][i % 4] if held else None, "m" if held else "", 40)
                for i in ids])
            ledger.end([SettleReservation(names[i % tenants], f"r{i}", 60, "s") for i in ids])
        return 2 * (stop - start) / (time.perf_counter() - began)

    warm = 2 * batch
    run(2 * n, 2 * n + warm, True)
    run(2 * n + warm, 2 * n + 2 * warm, False)
    per_round = n // rounds
    results = []
    for r in range(rounds):
        a, b = 2 * r * per_round, (2 * r + 1) * per_round
        if r % 2 == 0:
            held_rate, single_rate = run(a, b, True), run(b, b + per_round, False)
        else:
            single_rate, held_rate = run(a, b, False), run(b, b + per_round, True)
        results.append((held_rate, single_rate))
        print(f"    round {r + 1}/{rounds}: three levels with money {held_rate:8.0f} "
              f"decisions/s, tenant only {single_rate:8.0f}, ratio "
              f"{held_rate / single_rate:.2f}", flush=True)
    conn.close()
    return results


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
    ap.add_argument("--requests", type=int, default=20_000,
                    help="reservations (each also settled) in (a)")
    ap.add_argument("--batch", type=int, default=256,
                    help="commands per ledger call and rows per raw transaction; 256 is the "
                         "reserve and settle steps' batch_max")
    ap.add_argument("--tenants", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=6,
                    help="(a) alternates ledger and raw this many times")
    ap.add_argument("--events", type=int, default=1_000_000, help="ledger size for (b)")
    ap.add_argument("--skip-replay", action="store_true", help="only (a)")
    ap.add_argument("--levels", action="store_true", help="only (c)")
    args = ap.parse_args()
    # POSTGRES_URL's server when it answers, else an embedded one for the run.
    with tempfile.TemporaryDirectory(prefix="qf-bench-ledger-") as work, \
            services(Settings.from_env(), Path(work)) as (settings, _started):
        run(args, settings.postgres_url.rsplit("/", 1)[0] + "/qf_bench_ledger")


def run(args: argparse.Namespace, url: str) -> None:
    if args.levels:
        print(f"(c) {args.requests} reserve + settle at three levels with money and as many "
              f"at the tenant alone, batches of {args.batch}, {args.tenants} tenants, "
              f"{args.rounds} rounds")
        pairs = levels(url, args.requests, args.batch, args.tenants, args.rounds)
        ratios = sorted(h / s for h, s in pairs)
        print(f"    median: three levels {statistics.median(sorted(p[0] for p in pairs)):.0f} "
              f"decisions/s, tenant only {statistics.median(sorted(p[1] for p in pairs)):.0f}; "
              f"ratio median {statistics.median(ratios):.2f} (min {ratios[0]:.2f}, max "
              f"{ratios[-1]:.2f})")
        return
    print(f"(a) {args.requests} reserve + {args.requests} settle, batches of {args.batch}, "
          f"{args.tenants} tenants, {args.rounds} rounds")
    results = decisions(url, args.requests, args.batch, args.tenants, args.rounds)
    ratios = sorted(ledger / raw for ledger, raw in results)
    ledger_rates = sorted(r[0] for r in results)
    raw_rates = sorted(r[1] for r in results)
    print(f"    median: ledger {statistics.median(ledger_rates):.0f} decisions/s, raw "
          f"{statistics.median(raw_rates):.0f} rows/s; ratio median "
          f"{statistics.median(ratios):.2f} (min {ratios[0]:.2f}, max {ratios[-1]:.2f}; "
          f"goal >= 0.5)")
    if args.skip_replay:
        return
    replay_s, scan_s, n = replay(url, args.events)
    print(f"(b) audit replay of {n:,} ledger events: {replay_s:.1f} s "
          f"({n / replay_s:,.0f} events/s); bare cursor scan {scan_s:.1f} s; "
          f"replay/scan {replay_s / scan_s:.2f}x (goal < 60 s)")


if __name__ == "__main__":
    main()
