"""admit's gate with a key's own limits, as a ratio against the same gate without them in the
same run.

    python -m benchmarks.bench_gate --redis-url redis://127.0.0.1:PORT/0 [--screens 20000]
        [--batch 128] [--rounds 6]

Screens/s through `RedisAdmissionGate.screen_many` (one pipelined round trip a batch, as the
door's `GroupScreenGate` sends them), new requests spread over 10 tenants of 10 keys each:
(a) keys without limits (the baseline: the rate limit, the quota pre-check and the record), and
(b) keys with tokens per minute and max in flight set high enough never to refuse, so each
screen also prunes and sums its key's rolling minute and takes a slot. The two alternate in
rounds, each round starting with the other; the median of the per-round ratios. The database
is flushed before every round."""

from __future__ import annotations

import argparse
import statistics
import time
from itertools import count

from quotaflow.adapters.redis_client import connect_redis
from quotaflow.adapters.redis_gate import RedisAdmissionGate
from quotaflow.ports import ScreenQuery

_IDS = count()


def screens_per_s(gate: RedisAdmissionGate, n: int, batch: int, limited: bool) -> float:
    gate.redis.flushdb()
    now_ms = int(time.time() * 1000)
    queries = []
    for _ in range(n):
        i = next(_IDS)
        queries.append(ScreenQuery(
            f"r{i}", "h", f"k{i % 10}", now_ms // 60_000, f"t{i % 100 // 10}", "2026-12",
            10**9, 100, 10**12 if limited else 0, 10**6 if limited else 0, now_ms, 300))
    started = time.perf_counter()
    for at in range(0, n, batch):
        gate.screen_many(queries[at:at + batch])
    return n / (time.perf_counter() - started)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--redis-url", required=True)
    p.add_argument("--screens", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--rounds", type=int, default=6)
    args = p.parse_args()
    gate = RedisAdmissionGate(connect_redis(args.redis_url, 0, "standalone"))
    screens_per_s(gate, 2_000, args.batch, True)  # warm up: scripts loaded, connections open
    plain: list[float] = []
    limited: list[float] = []
    for r in range(args.rounds):
        order = (False, True) if r % 2 == 0 else (True, False)
        for with_limits in order:
            rate = screens_per_s(gate, args.screens, args.batch, with_limits)
            (limited if with_limits else plain).append(rate)
    ratios = [b / a for a, b in zip(plain, limited, strict=True)]
    print(f"without key limits: {statistics.median(plain):,.0f} screens/s (median of "
          f"{args.rounds})")
    print(f"with tokens per minute and max in flight: {statistics.median(limited):,.0f} "
          f"screens/s")
    print(f"ratio (median of per-round ratios): {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
