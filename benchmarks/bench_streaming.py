"""Time to first token and time between tokens through the whole pipeline (the official OpenAI
client streaming from admit: admit, estimate, reserve, infer publishing to Redis, the door's
relay) against the bare generation loop (the same generator called in this process with a sink
that only notes the time of each delta), in the same run, alternating request by request.

    python -m benchmarks.bench_streaming [--model standin|dir:PATH]
        [--token-delay-ms 20] [--requests 20] [--max-tokens 32]

The stand-in model pauses `--token-delay-ms` per decode step (a model's step time without the
weights); `dir:PATH` runs a built model in both. Requests go one at a time, so the figures are
latencies, not throughput. Own database `qf_bench_streaming`, Redis db index 14."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Collection, Sequence
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

import redis
from openai import OpenAI

from quotaflow.adapters import postgres as db
from quotaflow.adapters import tenant_store as tenants
from quotaflow.devstack.process import free_port
from quotaflow.devstack.stack import DevStack
from quotaflow.ledger.projection import RedisProjection
from quotaflow.ledger.store import PostgresLedger
from quotaflow.model.loader import load_generator
from quotaflow.ports import ChatMessage, GenerationRequest, StreamEnd, TokenDelta
from quotaflow.settings import Settings


class Stamps:
    """A token sink that notes when each decode step's deltas arrive, and nothing else."""

    def __init__(self) -> None:
        self.at: list[float] = []

    def publish(self, deltas: Sequence[TokenDelta] = (), ends: Sequence[StreamEnd] = (),
                watch: Collection[str] = ()) -> set[str]:
        now = time.perf_counter()
        self.at.extend(now for d in deltas if d.text)
        return set()


def prompt(i: int, max_tokens: int) -> str:
    """A prompt the stand-in answers with `max_tokens` words (a model answers as it does)."""
    return " ".join(f"w{i}x{j}" for j in range(max_tokens)) if i >= 0 else "Tell me a story."


def bare(generator: object, text: str, max_tokens: int) -> tuple[float, list[float]]:
    sink = Stamps()
    request = GenerationRequest((ChatMessage("user", text),), max_tokens,
                                request_id=uuid.uuid4().hex, stream=True)
    started = time.perf_counter()
    generator.generate([request], sink)  # type: ignore[attr-defined]
    return sink.at[0] - started, [b - a for a, b in pairwise(sink.at)]


def piped(client: OpenAI, model: str, text: str, max_tokens: int) -> tuple[float, list[float]]:
    at: list[float] = []
    started = time.perf_counter()
    for chunk in client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": text}], max_tokens=max_tokens,
            stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            at.append(time.perf_counter())
    return at[0] - started, [b - a for a, b in pairwise(at)]


def ms(values: list[float], q: int = 50) -> float:
    return statistics.quantiles(values, n=100)[q - 1] * 1000 if len(values) > 1 \
        else values[0] * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="standin")
    ap.add_argument("--token-delay-ms", type=int, default=20)
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--max-tokens", type=int, default=32)
    args = ap.parse_args()

    base = Settings.from_env()
    port = free_port()
    settings = replace(base, model_source=args.model,
                       standin_token_delay_ms=args.token_delay_ms,
                       postgres_url=base.postgres_url.rsplit("/", 1)[0] + "/qf_bench_streaming",
                       redis_url=base.redis_url.rsplit("/", 1)[0] + "/14",
                       public_url=f"http://127.0.0.1:{port}")
    db.recreate(settings.postgres_url)
    redis.Redis.from_url(settings.redis_url).flushdb()
    tmp = Path(tempfile.mkdtemp(prefix="qf-bench-streaming-"))
    stack = DevStack(tmp, settings, admit_port=port, kafka_port=free_port(), admit_workers=1)
    stack.up(explicit_pg=True, explicit_redis=True, progress=lambda m: print(m, flush=True))
    results: dict[str, tuple[list[float], list[float]]] = {"bare": ([], []), "pipe": ([], [])}
    try:
        with db.connect(settings.postgres_url, autocommit=True) as conn:
            key = tenants.create_tenant(conn, f"bench-{uuid.uuid4().hex[:6]}", 10**12,
                                        rate_limit_per_min=10**9)
            RedisProjection.connect(settings.redis_url).catch_up(PostgresLedger(conn))
        client = OpenAI(base_url=f"{stack.admit_url}/v1", api_key=key)
        generator = load_generator(settings)
        real = args.model != "standin"
        for i in range(-2, args.requests):  # two warm-up rounds, not counted
            text = prompt(-1 if real else i, args.max_tokens)
            for name in (("bare", "pipe") if i % 2 else ("pipe", "bare")):
                first, gaps = (bare(generator, text, args.max_tokens) if name == "bare"
                               else piped(client, settings.model_name, text, args.max_tokens))
                if i >= 0:
                    results[name][0].append(first)
                    results[name][1].extend(gaps)
    finally:
        stack.down()
    (bf, bg), (pf, pg) = results["bare"], results["pipe"]
    print(f"\n{args.requests} requests one at a time, {args.max_tokens} tokens each, model "
          f"{args.model}" + (f" ({args.token_delay_ms} ms a token)" if not real else ""))
    print("| path | first token p50 | p90 | between tokens p50 | p90 |")
    print("|---|---|---|---|---|")
    for name, f, g in (("bare generation loop (baseline)", bf, bg),
                       ("pipeline, OpenAI client streaming", pf, pg)):
        print(f"| {name} | {ms(f):.1f} ms ({ms(f) / ms(bf):.2f}x) | {ms(f, 90):.1f} ms | "
              f"{ms(g):.2f} ms ({ms(g) / ms(bg):.2f}x) | {ms(g, 90):.2f} ms |")


if __name__ == "__main__":
    main()
