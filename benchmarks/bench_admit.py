"""admit's HTTP throughput and latency versus a bare Flask CloudEvents endpoint served the same
way (gunicorn, 2 sync-thread workers) in the same run.

    python -m benchmarks.bench_admit [--requests 2000] [--concurrency 16]

The baseline parses the CloudEvent with the SDK and answers 202, nothing else. admit also
authenticates the key (PostgreSQL, then cached), rate-limits and pre-checks the quota (Redis,
one round trip), records the request (PostgreSQL) and produces it to Kafka with a flush before
answering; the billing period comes from the ledger's clock, read every few seconds."""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import redis

from quotaflow.adapters import postgres as db
from quotaflow.adapters import tenant_store as tenants
from quotaflow.devstack.process import free_port, port_open, wait_for
from quotaflow.devstack.stack import DevStack
from quotaflow.ledger.projection import RedisProjection
from quotaflow.ledger.store import PostgresLedger
from quotaflow.settings import Settings

BASELINE = textwrap.dedent('''
    from cloudevents.core.bindings import http as ce_http
    from flask import Flask, jsonify, request
    app = Flask("baseline")
    @app.post("/")
    def post():
        ev = ce_http.from_http_event(ce_http.HTTPMessage(dict(request.headers), request.get_data()))
        return jsonify(request_id=ev.get_id()), 202
''')


def load(port: int, key: str, n: int, concurrency: int) -> tuple[float, list[float]]:
    body = json.dumps({"model": "smollm2-135m-instruct", "prompt": "hello", "max_tokens": 4})

    def worker(count: int) -> list[float]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        lat = []
        for _ in range(count):
            headers = {"ce-specversion": "1.0", "ce-id": uuid.uuid4().hex, "ce-source": "/b",
                       "ce-type": "dev.quotaflow.inference.requested",
                       "Content-Type": "application/json", "Authorization": f"Bearer {key}"}
            t = time.perf_counter()
            conn.request("POST", "/", body, headers)
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 202, resp.status
            lat.append(time.perf_counter() - t)
        return lat

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        lats = [x for part in pool.map(worker, [n // concurrency] * concurrency) for x in part]
    return len(lats) / (time.perf_counter() - started), lats


def pct(lats: list[float], q: float) -> float:
    return statistics.quantiles(lats, n=100)[int(q) - 1] * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="qf-bench-admit-"))
    (tmp / "baseline_app.py").write_text(BASELINE)
    bport = free_port()
    base = subprocess.Popen([sys.executable, "-m", "gunicorn", "--workers", "2", "--threads", "8",
                             "--bind", f"127.0.0.1:{bport}", "--chdir", str(tmp),
                             "baseline_app:app"], stderr=subprocess.DEVNULL)
    settings = Settings.from_env()
    pg = settings.postgres_url.rsplit("/", 1)[0] + "/qf_bench_admit"
    port = free_port()
    # Its own database and Redis index: the projection must not mix with another ledger's.
    redis_url = settings.redis_url.rsplit("/", 1)[0] + "/13"
    stack = DevStack(tmp / "stack", replace(settings, postgres_url=pg, redis_url=redis_url,
                                            public_url=f"http://127.0.0.1:{port}"),
                     admit_port=port, kafka_port=free_port())
    db.recreate(pg)
    redis.Redis.from_url(redis_url).flushdb()
    stack.up(explicit_pg=True, explicit_redis=True, progress=lambda m: print(m, flush=True))
    try:
        wait_for("baseline", lambda: port_open("127.0.0.1", bport), 30, base)
        with db.connect(stack.settings.postgres_url, autocommit=True) as conn:
            key = tenants.create_tenant(conn, f"bench-{uuid.uuid4().hex[:6]}", 10**12,
                                        rate_limit_per_min=10**9)
            RedisProjection.connect(stack.settings.redis_url).catch_up(PostgresLedger(conn))
        load(bport, key, 200, args.concurrency)  # warm-up
        load(port, key, 200, args.concurrency)
        b_rps, b_lat = load(bport, key, args.requests, args.concurrency)
        a_rps, a_lat = load(port, key, args.requests, args.concurrency)
    finally:
        stack.down()
        base.terminate()
    print(f"\n{args.requests} requests, concurrency {args.concurrency}")
    print(f"{'':22}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}")
    for name, rps, lat in (("bare Flask CE (base)", b_rps, b_lat), ("admit", a_rps, a_lat)):
        print(f"{name:22}{rps:8.0f}{pct(lat, 50):9.1f}{pct(lat, 99):9.1f}")
    print(f"admit / baseline throughput: {a_rps / b_rps:.2f}")


if __name__ == "__main__":
    main()
