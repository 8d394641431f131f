"""Generated tokens/s through the whole local pipeline versus the bare generation loop on the
same model, in the same run, at concurrency 1 and 8.

    python -m benchmarks.bench_pipeline --model dir:PATH [--requests 64] [--max-tokens 32]
        [--rounds R] [--trace]

The bare loop calls `Generator.generate` directly (batch 1, then batches of 8), before and after
each pipeline run, and the faster of the two is that run's baseline; the pipeline numbers go
through admit (HTTP), Kafka (Tansu), estimate, reserve (PostgreSQL ledger), infer, settle and
record, measured from the first POST to the last final status. With `--rounds R` the result is
the median of R pipeline runs' ratios, each on a fresh stack."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from quotaflow import client
from quotaflow.adapters import kafka
from quotaflow.adapters import postgres as db
from quotaflow.adapters import tenant_store as tenants
from quotaflow.devstack.process import free_port
from quotaflow.devstack.stack import DevStack
from quotaflow.events.envelope import UndecodableEvent, from_kafka
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
             stream: bool, sent: dict[str, float] | None = None) -> float:
    """Tokens/s from the first POST to the last request's final record (the record step's
    database time), so the client's polling interval does not count."""

    def one(i: int) -> str:
        at = time.time()
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
        if sent is not None:
            sent[a["request_id"]] = at
        return str(a["request_id"])

    one(0)  # warm-up: consumer groups joined, model warm
    if sent is not None:
        sent.clear()
    started = datetime.now(UTC)
    with ThreadPoolExecutor(concurrency) as pool:
        ids = list(pool.map(one, range(n)))
    # Each request's final record: the run ends when the last one is written.
    done = [client.wait(stack.admit_url, key, rid, timeout_s=60) for rid in ids]
    assert all(r["status"] == "completed" for r in done), done
    elapsed = (max(datetime.fromisoformat(r["updated_at"]) for r in done) - started)
    return sum(int(r["usage"]["completion_tokens"]) for r in done) / elapsed.total_seconds()


STAGES = ("admitted", "estimated", "reserved", "completed", "settled", "recorded")


def stamps(stack: DevStack, sent: dict[str, float]) -> dict[str, dict[str, tuple[float, Any]]]:
    """Each stage's records of the requests in `sent`: request id -> (the record's timestamp,
    stamped when its step produced it, in s; its payload)."""
    consumer = kafka.make_consumer(stack.settings, f"bench-trace-{uuid.uuid4().hex}")
    found: dict[str, dict[str, tuple[float, Any]]] = {}
    for stage in STAGES:
        found[stage] = {}
        consumer.assign([TopicPartition(stack.settings.topic(stage), p, OFFSET_BEGINNING)
                         for p in range(stack.partitions)])
        while len(found[stage]) < len(sent) and (msgs := consumer.consume(500, 2.0)):
            for m in msgs:
                try:
                    payload = from_kafka(m.headers(), m.key(), m.value()).payload
                except UndecodableEvent:
                    continue
                if payload.request_id in sent:
                    found[stage][payload.request_id] = (m.timestamp()[1] / 1000, payload)
    consumer.close()
    return found


def trace(stack: DevStack, sent: dict[str, float]) -> None:
    """Where a request's time goes, from the client's send to its record: median and p90 of
    each span, from the Kafka records' timestamps (one host clock)."""
    at = stamps(stack, sent)

    def t(stage: str, rid: str) -> float:
        return at[stage][rid][0]

    def call_start(rid: str) -> float:  # infer's model call began (join, prefill, decode)
        return t("completed", rid) - float(at["completed"][rid][1].latency_ms) / 1000

    spans: list[tuple[str, Callable[[str], float]]] = [
        ("POST to admitted", lambda r: t("admitted", r) - sent[r]),
        ("admitted to estimated", lambda r: t("estimated", r) - t("admitted", r)),
        ("estimated to reserved", lambda r: t("reserved", r) - t("estimated", r)),
        ("reserved to infer's model call", lambda r: call_start(r) - t("reserved", r)),
        ("the model call", lambda r: t("completed", r) - call_start(r)),
        ("completed to settled", lambda r: t("settled", r) - t("completed", r)),
        ("settled to recorded", lambda r: t("recorded", r) - t("settled", r))]
    ids = [r for r in sent if all(r in at[stage] for stage in STAGES)]
    print(f"\nwhere the time goes at concurrency 8 ({len(ids)} of {len(sent)} requests traced), "
          f"ms:\n{'':34}{'median':>8}{'p90':>8}")
    for name, span in spans:
        values = sorted(span(r) * 1000 for r in ids)
        if values:
            print(f"{name:34}{statistics.median(values):8.1f}"
                  f"{values[int(0.9 * (len(values) - 1))]:8.1f}")


def decode_rows(stack: DevStack) -> tuple[float, float]:
    """infer's `ml_decode_rows` so far: (sum, count) of requests decoded together a pass."""
    url = f"http://127.0.0.1:{stack.metrics_ports['infer']}/metrics"
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    values = {kind: sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                        if line.startswith(f"ml_decode_rows_{kind}"))
              for kind in ("sum", "count")}
    return values["sum"], values["count"]


def start_stack(settings: Settings, broker: str = "") -> DevStack:
    """A local stack on the bench's own database and Redis index, emptied first; on `broker`
    (kafka, tansu; "": Apache Kafka where it runs here)."""
    base = settings.postgres_url.rsplit("/", 1)[0]
    port = free_port()
    stack = DevStack(Path(tempfile.mkdtemp(prefix="qf-bench-")),
                     replace(settings, postgres_url=f"{base}/qf_test_bench_pipeline",
                             redis_url=settings.redis_url.rsplit("/", 1)[0] + "/14",
                             public_url=f"http://127.0.0.1:{port}"),
                     admit_port=port, kafka_port=free_port(), admit_workers=1, broker=broker)
    db.recreate(stack.settings.postgres_url)
    redis.Redis.from_url(stack.settings.redis_url).flushdb()
    print("starting the pipeline ...", flush=True)
    stack.up(explicit_pg=True, explicit_redis=True, progress=lambda m: print(m, flush=True))
    return stack


def pipeline_round(settings: Settings, args: argparse.Namespace, first: bool,
                   broker: str = "") -> tuple[float | None, float, float]:
    """One stack's run: (concurrency 1 on the first round only, concurrency 8, the requests
    the running batch held a pass at 8). The stack is down again when it returns, so the bare
    loop after it has the cores to itself."""
    stack = start_stack(settings, broker)
    try:
        with db.connect(stack.settings.postgres_url, autocommit=True) as conn:
            key = tenants.create_tenant(conn, f"bench-{uuid.uuid4().hex[:6]}", 10_000_000)
            RedisProjection.connect(stack.settings.redis_url).catch_up(PostgresLedger(conn))
        stream = args.clients == "stream"
        pipe1 = pipeline(stack, key, args.requests, args.max_tokens, 1, stream) if first \
            else None
        before = decode_rows(stack)
        sent: dict[str, float] = {}
        pipe8 = pipeline(stack, key, args.requests, args.max_tokens, 8, stream, sent)
        after = decode_rows(stack)
        if args.trace and first:
            trace(stack, sent)
    finally:
        stack.down()
    return pipe1, pipe8, (after[0] - before[0]) / max(1.0, after[1] - before[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="standin", help="standin or dir:PATH")
    ap.add_argument("--requests", type=int, default=64,
                    help="requests per run (default 64: fewer, and the first and last rounds "
                         "of eight, ramping up and down, weigh on the ratio)")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=1,
                    help="pipeline runs at concurrency 8, each on a fresh stack between two "
                         "runs of the bare loop; the result is the median of their ratios "
                         "(default 1)")
    ap.add_argument("--clients", choices=("stream", "poll"), default="stream",
                    help="stream: each client sends stream: true and reads the request's "
                         "events until it ends (default); poll: status every 0.25 s")
    ap.add_argument("--trace", action="store_true",
                    help="also print where a request's time goes at concurrency 8, span by "
                         "span, from the Kafka records' timestamps (first round)")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    settings = replace(Settings.from_env(), model_source=args.model, batch_max=8)

    def bare_runs(batch_1: bool) -> tuple[float, float]:
        """Batch 1 (only beside the first round: concurrency 1 runs there) and batch 8."""
        print(f"bare loop, {args.requests} requests x {args.max_tokens} tokens ...", flush=True)
        return (bare(settings, args.requests, args.max_tokens, 1) if batch_1 else 0.0,
                bare(settings, args.requests, args.max_tokens, 8))

    # The bare loop runs before and after each pipeline run, with the stack down: this
    # machine's speed drifts by 20% and more within minutes, so each run's baseline is the
    # faster of the two beside it (the harder one).
    bares = [bare_runs(True)]
    pipe1: float | None = None
    runs: list[tuple[float, float]] = []  # (concurrency 8 tokens/s, batch rows a pass)
    for r in range(args.rounds):
        got1, pipe8, rows8 = pipeline_round(settings, args, first=r == 0)
        pipe1 = got1 if got1 is not None else pipe1
        runs.append((pipe8, rows8))
        bares.append(bare_runs(r == 0))
    assert pipe1 is not None
    bare1 = max(bares[0][0], bares[1][0])
    ratios = [pipe8 / max(bares[i][1], bares[i + 1][1]) for i, (pipe8, _) in enumerate(runs)]

    print(f"\nmodel {args.model}, {args.requests} requests, max_tokens {args.max_tokens}, "
          f"clients {args.clients}, {args.rounds} round(s)")
    print(f"{'':28}{'tokens/s':>10}")
    print(f"{'bare loop, batch 1':28}{bare1:10.1f}")
    print(f"{'bare loop, batch 8':28}" + " / ".join(f"{b8:.1f}" for _, b8 in bares))
    print(f"{'pipeline, concurrency 1':28}{pipe1:10.1f}   {pipe1 / bare1:.2f}x bare batch 1")
    for (pipe8, rows8), ratio in zip(runs, ratios, strict=True):
        print(f"{'pipeline, concurrency 8':28}{pipe8:10.1f}   {ratio:.2f}x bare batch 8, "
              f"{pipe8 / pipe1:.2f}x pipeline concurrency 1; the running batch held "
              f"{rows8:.1f} requests a pass")
    if len(ratios) > 1:
        print(f"\nat concurrency 8, median of {len(ratios)} rounds: "
              f"{statistics.median(ratios):.2f}x the bare loop (batch 8); "
              f"range {min(ratios):.2f} to {max(ratios):.2f}")


if __name__ == "__main__":
    main()
