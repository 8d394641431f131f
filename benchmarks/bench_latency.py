"""The latency a single request sees through the whole pipeline, on the 3-node Apache Kafka
cluster and on Tansu in the same run (issue 25, item 7): stand-in model, one request at a time,
from the official OpenAI client's send to

- its first streamed token (`stream=True`), and
- its whole answer (`stream=False`),

each p50 and p99, against the bare generation loop (the same generator called in this process)
measured in the same run, alternating request by request. Beside them, what bounds them: one
Kafka hop alone (a record produced with the stack's producer settings to a consumer with its
consumer settings, on the same brokers), p50 and p99.

    .venv/bin/python benchmarks/bench_latency.py [--broker kafka|tansu|both] [--requests 60]
        [--max-tokens 16] [--json FILE] [--plot docs/bench/latency-brokers.png]

Each broker gets a stack of its own (database `qf_bench_latency`, Redis db index 14), started
and stopped in turn. Prints one Markdown table."""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import redis
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from openai import OpenAI

from quotaflow.adapters import kafka
from quotaflow.adapters import postgres as db
from quotaflow.adapters import tenant_store as tenants
from quotaflow.adapters.kafka_config import client_config
from quotaflow.devstack import brokers
from quotaflow.devstack.process import free_port
from quotaflow.devstack.stack import DevStack
from quotaflow.ledger.projection import RedisProjection
from quotaflow.ledger.store import PostgresLedger
from quotaflow.model.loader import load_generator
from quotaflow.ports import ChatMessage, GenerationRequest, StreamEnd, TokenDelta
from quotaflow.settings import Settings

GOALS_MS = {"first token": 10.0, "whole answer": 25.0}


class Stamps:
    """A token sink noting when the first delta and the end arrive."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.end: float | None = None

    def publish(self, deltas: Any = (), ends: Any = (), watch: Any = ()) -> set[str]:
        now = time.perf_counter()
        if self.first is None and any(isinstance(d, TokenDelta) and d.text for d in deltas):
            self.first = now
        if any(isinstance(e, StreamEnd) for e in ends):
            self.end = now
        return set()


def pct(values: list[float], q: int) -> float:
    """The q-th percentile in ms."""
    if len(values) < 2:
        return values[0] * 1000
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000


def bare(generator: Any, text: str, max_tokens: int) -> tuple[float, float]:
    sink = Stamps()
    request = GenerationRequest((ChatMessage("user", text),), max_tokens,
                                request_id=uuid.uuid4().hex, stream=True)
    started = time.perf_counter()
    generator.generate([request], sink)
    done = time.perf_counter()
    return (sink.first or done) - started, (sink.end or done) - started


def streamed(client: OpenAI, model: str, text: str, max_tokens: int) -> float:
    started = time.perf_counter()
    first = None
    for chunk in client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": text}], max_tokens=max_tokens,
            stream=True):
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter()
    return (first or time.perf_counter()) - started


def whole(client: OpenAI, model: str, text: str, max_tokens: int) -> float:
    started = time.perf_counter()
    answer = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}], max_tokens=max_tokens)
    assert answer.choices[0].message.content
    return time.perf_counter() - started


def kafka_hop(settings: Settings, n: int) -> list[float]:
    """`n` records one at a time, each produced (the stack's producer settings, acks=all)
    and consumed (its consumer settings) before the next: seconds from produce to poll."""
    topic = f"bench-hop-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(client_config(settings))
    replicas = min(3, len(admin.list_topics(timeout=10).brokers))
    admin.create_topics([NewTopic(topic, 1, replicas)])[topic].result(30)
    producer = kafka.make_producer(settings)
    consumer = kafka.make_consumer(settings, f"bench-hop-{uuid.uuid4().hex[:8]}")
    consumer.subscribe([topic])
    out: list[float] = []
    try:
        producer.produce(topic, value=b"warm")
        producer.flush(30)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # assigned and past the warm-up record
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                break
        for i in range(n):
            started = time.perf_counter()
            producer.produce(topic, value=str(i).encode())
            producer.poll(0)
            while True:
                msg = consumer.poll(1.0)
                if msg is not None and not msg.error() and msg.value() == str(i).encode():
                    out.append(time.perf_counter() - started)
                    break
    finally:
        consumer.close()
        producer.flush(5)
        admin.delete_topics([topic])
    return out


def handler_ms(stack: DevStack) -> dict[str, float]:
    """Each consumer step's mean time in its handler per batch (its `qf_handler_seconds`):
    its database and Redis work and its output's produce and flush, not its wait for input."""
    out: dict[str, float] = {}
    for step, port in stack.metrics_ports.items():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        got = {m[0]: float(m[1]) for m in re.findall(
            r'^qf_handler_seconds_(sum|count)\{step="[a-z]+"\} ([0-9.e+-]+)$', text, re.M)}
        if got.get("count"):
            out[step] = round(got["sum"] / got["count"] * 1000, 2)
    return out


# More of a stack's run, while it is up (`measure`'s `then`): the stack, its tenant and key.
Then = Callable[[DevStack, str, str], dict[str, Any]]


def measure(broker: str, base: Settings, args: argparse.Namespace, then: Then | None = None,
            admit_workers: int = 1) -> dict[str, Any]:
    port = free_port()
    settings = replace(base, model_source="standin", standin_token_delay_ms=0,
                       postgres_url=base.postgres_url.rsplit("/", 1)[0] + "/qf_bench_latency",
                       redis_url=base.redis_url.rsplit("/", 1)[0] + "/14",
                       public_url=f"http://127.0.0.1:{port}")
    db.recreate(settings.postgres_url)
    redis.Redis.from_url(settings.redis_url).flushdb()
    tmp = Path(tempfile.mkdtemp(prefix=f"qf-bench-latency-{broker}-"))
    # A plaintext listener, as Tansu's: the two brokers compared on the same footing (the
    # secured cluster's TLS and SCRAM are the tests' and `dev up`'s default, not measured here).
    stack = DevStack(tmp, settings, admit_port=port, kafka_port=free_port(),
                     admit_workers=admit_workers, broker=broker, brokers=3, secure=False)
    stack.up(explicit_pg=True, explicit_redis=True, progress=lambda m: print(m, flush=True))
    times: dict[str, list[float]] = {k: [] for k in ("first", "whole", "bare first",
                                                      "bare whole")}
    try:
        with db.connect(stack.settings.postgres_url, autocommit=True) as conn:
            tenant = f"bench-{uuid.uuid4().hex[:6]}"
            key = tenants.create_tenant(conn, tenant, 10**12, rate_limit_per_min=10**9)
            RedisProjection.connect(stack.settings.redis_url).catch_up(PostgresLedger(conn))
        client = OpenAI(base_url=f"{stack.admit_url}/v1", api_key=key, max_retries=0)
        generator = load_generator(stack.settings)
        model = stack.settings.model_name
        for i in range(-3, args.requests):  # three warm-up rounds, not counted
            text = " ".join(f"w{i}x{j}" for j in range(args.max_tokens))
            first = streamed(client, model, text, args.max_tokens)
            answer = whole(client, model, text + " again", args.max_tokens)
            b_first, b_whole = bare(generator, text, args.max_tokens)
            if i >= 0:
                for name, value in (("first", first), ("whole", answer),
                                    ("bare first", b_first), ("bare whole", b_whole)):
                    times[name].append(value)
        with db.connect(stack.settings.postgres_url, autocommit=True) as conn:
            # admit's insert to record's update (each its transaction's start): the pipeline
            # without the door's wait for the record or the client's HTTP.
            times["stored to ended"] = [float(str(s)) for (s,) in conn.execute(
                "SELECT extract(epoch FROM updated_at - created_at) FROM requests "
                "WHERE status = 'completed' ORDER BY created_at OFFSET 6").fetchall()]
        handlers = handler_ms(stack)
        hop = kafka_hop(stack.settings, args.hops)
        more = then(stack, tenant, key) if then is not None else {}
    finally:
        stack.down()
    return {"broker": broker, "describe": "Apache Kafka 3 nodes" if broker == "kafka"
            else "Tansu", "fetch_wait_max_ms": stack.settings.kafka_fetch_wait_max_ms,
            "linger_ms": stack.settings.kafka_linger_ms, "handler_ms": handlers,
            "ms": {name: {"p50": round(pct(v, 50), 2), "p99": round(pct(v, 99), 2)}
                   for name, v in {**times, "kafka hop": hop}.items()},
            "samples_ms": {name: [round(x * 1000, 3) for x in v]
                           for name, v in {**times, "kafka hop": hop}.items()}, **more}


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """The latency CDFs of the first token and the whole answer, each broker, one figure."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results:
        for key, style, what in (("first", "-", "first streamed token"),
                                 ("whole", "--", "whole answer")):
            xs = sorted(r["samples_ms"][key])
            ys = [(i + 1) / len(xs) for i in range(len(xs))]
            ax.plot(xs, ys, style, label=f"{r['describe']}: {what}")
    for goal in GOALS_MS.values():
        ax.axvline(goal, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xscale("log")
    ax.set_xlabel("ms after the send (log scale; dotted: the 10 and 25 ms goals)")
    ax.set_ylabel("share of requests")
    ax.set_title("One request at a time, stand-in model")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def table(results: list[dict[str, Any]], requests: int) -> str:
    lines = [f"{requests} requests one at a time on each broker, stand-in model (no token "
             "delay), max_tokens 16",
             "", "| broker | figure | goal p50 | p50 ms | p99 ms | p99 / p50 | "
             "bare loop p50 ms (same run) | pipeline / bare |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        ms = r["ms"]
        for name, key, bare_key in (("first streamed token", "first", "bare first"),
                                    ("whole answer", "whole", "bare whole")):
            goal = GOALS_MS["first token" if key == "first" else "whole answer"]
            p50, p99, b50 = ms[key]["p50"], ms[key]["p99"], ms[bare_key]["p50"]
            lines.append(f"| {r['describe']} | {name} | ≤ {goal:g} | {p50:.1f} | {p99:.1f} | "
                         f"{p99 / p50:.1f} | {b50:.2f} | {p50 / b50:.0f}x |")
        ended = ms["stored to ended"]
        lines.append(f"| {r['describe']} | admit's insert → record's update (PostgreSQL) | | "
                     f"{ended['p50']:.1f} | {ended['p99']:.1f} | "
                     f"{ended['p99'] / ended['p50']:.1f} | | |")
        hop = ms["kafka hop"]
        lines.append(f"| {r['describe']} | one Kafka hop (produce → poll; fetch.wait.max.ms "
                     f"{r['fetch_wait_max_ms']}, linger.ms {r['linger_ms']}) | | "
                     f"{hop['p50']:.1f} | {hop['p99']:.1f} | {hop['p99'] / hop['p50']:.1f} | | |")
        lines.append(f"| {r['describe']} | each step's handler a batch, mean ms: " + ", ".join(
            f"{k} {v:.1f}" for k, v in r["handler_ms"].items()) + " | | | | | | |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--broker", choices=("kafka", "tansu", "both"), default="both")
    ap.add_argument("--requests", type=int, default=60)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--hops", type=int, default=100)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--plot", type=Path, default=None, help="draw the CDFs (a PNG) here")
    args = ap.parse_args()
    wanted = ["kafka", "tansu"] if args.broker == "both" else [args.broker]
    base = Settings.from_env()
    results = [measure(brokers.choose(b), base, args) for b in wanted]
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if args.plot:
        plot(results, args.plot)
    print(table(results, args.requests))


if __name__ == "__main__":
    main()
