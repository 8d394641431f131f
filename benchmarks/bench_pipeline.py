"""Generated tokens/s through the whole local pipeline versus the bare generation loop on the
same model, in the same run, at concurrency 1 and 8.

    .venv/bin/python benchmarks/bench_pipeline.py --model dir:PATH [--requests 64] [--max-tokens 32]

The bare loop calls `Generator.generate` directly (batch 1, then batches of 8), before and after
the pipeline runs, and the faster of the two is the baseline; the pipeline numbers go through
admit (HTTP), Kafka (Tansu), estimate, reserve (PostgreSQL ledger), infer, settle and record,
measured from the first POST to the last final status."""

from __future__ import annotations

import argparse
import tempfile
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import redis

from quotaflow import client
from quotaflow.adapters import postgres as db
from quotaflow.adapters import tenant_store as tenants
from quotaflow.devstack.process import free_port
from quotaflow.devstack.stack import DevStack
from quotaflow.ledger.projection import RedisProjection
from quotaflow.ledger.store import PostgresLedger
from quotaflow.model.base import ChatMessage, GenerationRequest
from quotaflow.model.loader import load_generator
from quotaflow.settings import Settings

PROMPTS = ["What is the capital of France?", "Name three primary colours.",
           "Write one sentence about the sea.", "What is 12 times 12?",
           "Give me a synonym for happy.", "Why is the sky blue?",
           "Translate 'good morning' into Spanish.", "What do bees make?"]


def bare(settings: Settings, n: int, max_tokens: int, batch: int) -> float:
    gen = load_generator(settings)
    reqs = [GenerationRequest((ChatMessage("user", PROMPTS[i % len(PROMPTS)]),), max_tokens)
            for i in range(n)]
    gen.generate(reqs[:1])  # warm-up
    started = time.perf_counter()
    tokens = 0
    for i in range(0, n, batch):
        tokens += sum(r.completion_tokens for r in gen.generate(reqs[i:i + batch]))
    return tokens / (time.perf_counter() - started)


def pipeline(stack: DevStack, key: str, n: int, max_tokens: int, concurrency: int,
             stream: bool) -> float:
    """Tokens/s from the first POST to the last request's final record (the record step's
    database time), so the client's polling interval does not count."""

    def one(i: int) -> str:
        a = client.submit(stack.admit_url, key, {"model": stack.settings.model_name,
                                                 "prompt": PROMPTS[i % len(PROMPTS)],
                                                 "max_tokens": max_tokens, "stream": stream})
        if stream:  # as a streaming client (an OpenAI one included): done when its stream
            # ends, which is when generation does; settle and record follow within a few hops,
            # while the client sends its next request
            ended = client.follow(stack.admit_url, key, a["request_id"], timeout_s=600)
            assert ended["status"] == "completed", ended
        else:  # poll gently: status reads compete with the pipeline for the same two cores
            r = client.wait(stack.admit_url, key, a["request_id"], timeout_s=600, poll_s=0.25)
            assert r["status"] == "completed", r
        return str(a["request_id"])

    one(0)  # warm-up: consumer groups joined, model warm
    started = datetime.now(UTC)
    with ThreadPoolExecutor(concurrency) as pool:
        ids = list(pool.map(one, range(n)))
    # Each request's final record: the run ends when the last one is written.
    done = [client.wait(stack.admit_url, key, rid, timeout_s=60) for rid in ids]
    assert all(r["status"] == "completed" for r in done), done
    elapsed = (max(datetime.fromisoformat(r["updated_at"]) for r in done) - started)
    return sum(int(r["usage"]["completion_tokens"]) for r in done) / elapsed.total_seconds()


def decode_rows(stack: DevStack) -> tuple[float, float]:
    """infer's `ml_decode_rows` so far: (sum, count) of requests decoded together a pass."""
    url = f"http://127.0.0.1:{stack.metrics_ports['infer']}/metrics"
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    values = {kind: sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                        if line.startswith(f"ml_decode_rows_{kind}"))
              for kind in ("sum", "count")}
    return values["sum"], values["count"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="standin", help="standin or dir:PATH")
    ap.add_argument("--requests", type=int, default=64,
                    help="requests per run (default 64: fewer, and the first and last rounds "
                         "of eight, ramping up and down, weigh on the ratio)")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--clients", choices=("stream", "poll"), default="stream",
                    help="stream: each client sends stream: true and reads the request's "
                         "events until it ends (default); poll: status every 0.25 s")
    args = ap.parse_args()
    settings = replace(Settings.from_env(), model_source=args.model, batch_max=8)

    print(f"bare loop, {args.requests} requests x {args.max_tokens} tokens ...", flush=True)
    bare1 = bare(settings, args.requests, args.max_tokens, 1)
    bare8 = bare(settings, args.requests, args.max_tokens, 8)

    base = settings.postgres_url.rsplit("/", 1)[0]
    port = free_port()
    stack = DevStack(Path(tempfile.mkdtemp(prefix="qf-bench-")),
                     replace(settings, postgres_url=f"{base}/qf_test_bench_pipeline",
                             redis_url=settings.redis_url.rsplit("/", 1)[0] + "/14",
                             public_url=f"http://127.0.0.1:{port}"),
                     admit_port=port, kafka_port=free_port(), admit_workers=1)
    db.recreate(stack.settings.postgres_url)
    redis.Redis.from_url(stack.settings.redis_url).flushdb()
    print("starting the pipeline ...", flush=True)
    stack.up(explicit_pg=True, explicit_redis=True, progress=lambda m: print(m, flush=True))
    try:
        with db.connect(stack.settings.postgres_url, autocommit=True) as conn:
            key = tenants.create_tenant(conn, f"bench-{uuid.uuid4().hex[:6]}", 10_000_000)
            RedisProjection.connect(stack.settings.redis_url).catch_up(PostgresLedger(conn))
        pipe1 = pipeline(stack, key, args.requests, args.max_tokens, 1, args.clients == "stream")
        before = decode_rows(stack)
        pipe8 = pipeline(stack, key, args.requests, args.max_tokens, 8, args.clients == "stream")
        after = decode_rows(stack)
        rows8 = (after[0] - before[0]) / max(1.0, after[1] - before[1])
    finally:
        stack.down()
    # The bare loop again, now that the stack is down: this machine's speed drifts by 20% and
    # more within minutes, so the baseline is the faster of the two runs (the harder one).
    print("bare loop again ...", flush=True)
    bare1 = max(bare1, bare(settings, args.requests, args.max_tokens, 1))
    bare8 = max(bare8, bare(settings, args.requests, args.max_tokens, 8))

    print(f"\nmodel {args.model}, {args.requests} requests, max_tokens {args.max_tokens}, "
          f"clients {args.clients}")
    print(f"{'':28}{'tokens/s':>10}")
    print(f"{'bare loop, batch 1':28}{bare1:10.1f}")
    print(f"{'bare loop, batch 8':28}{bare8:10.1f}")
    print(f"{'pipeline, concurrency 1':28}{pipe1:10.1f}   {pipe1 / bare1:.2f}x bare batch 1")
    print(f"{'pipeline, concurrency 8':28}{pipe8:10.1f}   {pipe8 / bare8:.2f}x bare batch 8, "
          f"{pipe8 / pipe1:.2f}x pipeline concurrency 1")
    print(f"\nat concurrency 8 the running batch held {rows8:.1f} requests a forward pass on "
          f"average (infer's ml_decode_rows)")


if __name__ == "__main__":
    main()
