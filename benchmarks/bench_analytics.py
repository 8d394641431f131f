"""Analytics roll-up throughput against a bare consume of the same topic, in the same run.

    python -m benchmarks.bench_analytics [--events 60000] [--tenants 50] [--rounds 3]

A ledger of --events events (reservations, settlements, a few rejections, per tenant and
request, with request records carrying model and key) is written in SQL into database
`qf_bench_analytics`, published to the ledger topic of a Tansu broker started for the run by
the outbox relay, then read from the start, alternating in rounds:
(a) bare: a consumer that only polls batches of records (no decoding);
(b) decode: the same plus the analytics decoder (Avro -> LedgerEntry);
(c) roll-up: `AnalyticsConsumer` applying each batch of 1,000 to PostgreSQL in one
    transaction (dedupe, attribution, bucket upserts, offsets).
Each round reads every record with a new consumer group; timing starts at the first record, so
the group join is left out."""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import psycopg
from confluent_kafka import Consumer

from quotaflow.adapters import kafka
from quotaflow.adapters import postgres as db
from quotaflow.analytics.consumer import AnalyticsConsumer, decode
from quotaflow.analytics.store import PostgresUsageStore
from quotaflow.devstack.process import free_port, port_open, wait_for
from quotaflow.devstack.services import tansu_binary
from quotaflow.ledger.outbox import LedgerRelay
from quotaflow.ledger.store import PostgresLedger
from quotaflow.settings import Settings


def make_ledger(conn: psycopg.Connection[tuple[object, ...]], events: int, tenants: int) -> int:
    """Requests of `tenants` tenants, each reserved then settled (every 10th rejected)."""
    requests = events // 2
    conn.execute(
        "INSERT INTO requests (request_id, tenant_id, key_id, source, ce_id, payload_hash, "
        "status, model) SELECT 'r' || i, 't' || (i %% %s), 'k' || (i %% (3 * %s)), '/b', "
        "'r' || i, 'h', 'completed', 'm' || (i %% 2) FROM generate_series(1, %s) i",
        (tenants, tenants, requests))
    conn.execute(
        "INSERT INTO ledger_events (tenant_id, stream_version, kind, request_id, period, amount,"
        " released, recorded_at) SELECT 't' || (i %% %s), row_number() OVER (PARTITION BY i %% %s"
        " ORDER BY i, e), CASE WHEN e = 0 AND i %% 10 = 0 THEN 'RequestRejected' WHEN e = 0 "
        "THEN 'TokensReserved' ELSE 'ReservationSettled' END, 'r' || i, '2026-11', "
        "CASE WHEN e = 0 THEN 100 ELSE 40 + i %% 50 END, CASE WHEN e = 0 THEN 0 ELSE 60 - i %% 50"
        " END, timestamptz '2026-11-29 00:00:00+00' + i * interval '50 ms' "
        "FROM generate_series(1, %s) i, generate_series(0, 1) e WHERE e = 0 OR i %% 10 <> 0 "
        "ORDER BY i, e", (tenants, tenants, requests))
    row = conn.execute("SELECT count(*) FROM ledger_events").fetchone()
    return int(str(row[0])) if row is not None else 0


def timed(read: Callable[[], int], total: int) -> float:
    """Records/s of `read` (returns records handled per call) from its first record on."""
    done, began = 0, 0.0
    while done < total:
        n = read()
        if n and not began:
            began = time.perf_counter()
        done += n
    return total / (time.perf_counter() - began)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=60_000)
    p.add_argument("--tenants", type=int, default=50)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = Path(tempfile.mkdtemp(prefix="bench-analytics-")) / "tansu.log"
    with log.open("wb") as out:
        broker = subprocess.Popen([str(tansu_binary()), "broker", "--listener-url", url,
                                   "--advertised-listener-url", url, "--storage-engine",
                                   "memory://tansu/"], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for("tansu", lambda: port_open("127.0.0.1", port), 30, broker, log)
        pg = Settings.from_env().postgres_url.rsplit("/", 1)[0] + "/qf_bench_analytics"
        settings = replace(Settings(), kafka_bootstrap=f"127.0.0.1:{port}", postgres_url=pg,
                           kafka_session_timeout_ms=2000, kafka_fetch_wait_max_ms=20)
        db.recreate(pg)
        kafka.create_topics(settings)
        conn = psycopg.connect(pg, autocommit=True)
        total = make_ledger(conn, args.events, args.tenants)
        LedgerRelay(PostgresLedger(conn), kafka.make_producer(settings),
                    settings.topic("ledger")).publish_pending()
        print(f"{total} ledger events on {settings.topic('ledger')}")
        results: dict[str, list[float]] = {"bare": [], "decode": [], "rollup": []}
        for r in range(args.rounds):
            for name in ("bare", "decode", "rollup") if r % 2 == 0 else ("rollup", "decode",
                                                                          "bare"):
                group = f"bench-{name}-{r}"
                if name == "rollup":
                    store = PostgresUsageStore(conn)
                    store.reset()
                    ac = AnalyticsConsumer(replace(settings, consumer_group_prefix=group),
                                           store, batch_max=1000, poll_s=0.2)
                    results[name].append(timed(ac.poll_once, total))
                    ac.close()
                    continue
                c: Consumer = kafka.make_consumer(settings, group)
                c.subscribe([settings.topic("ledger")])

                def bare(c: Consumer = c, dec: bool = name == "decode") -> int:
                    ms = c.consume(1000, 0.2)
                    if dec:
                        for m in ms:
                            decode(m.headers(), m.value())
                    return len(ms)

                results[name].append(timed(bare, total))
                c.close()
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}/s"
                                                 for k, v in results.items()))
        med = {k: statistics.median(v) for k, v in results.items()}
        print(f"\nmedian of {args.rounds} rounds, {total} events: bare {med['bare']:,.0f}/s, "
              f"decode {med['decode']:,.0f}/s ({med['decode'] / med['bare']:.2f}), "
              f"roll-up {med['rollup']:,.0f}/s ({med['rollup'] / med['bare']:.2f} of bare)")
        check = conn.execute("SELECT sum(charged_tokens) FROM usage_rollups").fetchone()
        want = conn.execute("SELECT sum(amount) FROM ledger_events "
                            "WHERE kind = 'ReservationSettled'").fetchone()
        print(f"roll-ups charged {check[0] if check else None}, "
              f"the ledger {want[0] if want else None}")
    finally:
        broker.terminate()
        broker.wait(10)


if __name__ == "__main__":
    main()
