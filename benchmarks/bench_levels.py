"""What projecting every budget level costs the Redis projection and admit's screen, each as a
ratio against its baseline in the same run.

    python -m benchmarks.bench_levels --redis-url redis://127.0.0.1:PORT/0 [--events 20000]
        [--screens 20000] [--batch 256] [--rounds 6]

(1) Events/s applied by `RedisProjection.apply`, a batch a call (one pipelined round trip, as
reserve and settle catch up), reservations and settlements of 100 tenants' keys in teams, so
each event moves its tenant's balance and its tenant's, key's and team's levels; against the
script before levels (kept below as `_BALANCE_ONLY`: the balance hash alone) applying the same
events. (2) Screens/s through `RedisAdmissionGate.screen_many` (batches of 128): keys whose
key and team limit tokens (set high enough never to refuse), so the screen also reads their
two level hashes; against keys with no level limit. The two sides of each alternate in rounds,
each round starting with the other; the median of the per-round ratios. The database is
flushed before every round."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from quotaflow.adapters.redis_client import RedisClient, call_script, connect_redis
from quotaflow.adapters.redis_gate import RedisAdmissionGate
from quotaflow.events.status import LedgerKind
from quotaflow.ledger import domain
from quotaflow.ledger.commands import StoredEvent
from quotaflow.ledger.domain import Balance
from quotaflow.ledger.level_projection import balance_key
from quotaflow.ledger.projection import RedisProjection
from quotaflow.ports import ScreenQuery

# infra/redis/apply_ledger.lua as it was before the levels were projected.
_BALANCE_ONLY = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return -1
end
local applied = 0
for i = 2, #KEYS do
  local base = 2 + (i - 2) * 4
  local seq = tonumber(ARGV[base])
  local key = KEYS[i]
  if seq > tonumber(redis.call('HGET', key, 'seq') or '0') then
    redis.call('HINCRBY', key, 'granted', ARGV[base + 1])
    redis.call('HINCRBY', key, 'reserved', ARGV[base + 2])
    redis.call('HINCRBY', key, 'spent', ARGV[base + 3])
    redis.call('HSET', key, 'seq', seq)
    applied = applied + 1
  end
end
return applied
"""
AT = datetime(2026, 12, 6, tzinfo=UTC)


def history(n: int) -> list[StoredEvent]:
    """Reservations, each settled two events later, by 100 tenants' 10 keys in 2 teams."""
    out = []
    for seq in range(1, n + 1):
        i = seq // 2
        settled = seq % 2 == 0
        out.append(StoredEvent(
            seq, f"t{i % 100}", seq, LedgerKind.RESERVATION_SETTLED if settled
            else LedgerKind.TOKENS_RESERVED, f"r{i}", "2026-12", 30 if settled else 100,
            70 if settled else 0, None, AT, f"k{i % 1000}", f"team{i % 2}",
            90 if settled else 300, 210 if settled else 0))
    return out


def balance_only(client: RedisClient) -> Callable[[list[StoredEvent]], None]:
    script = client.register_script(_BALANCE_ONLY)

    def apply(events: list[StoredEvent]) -> None:
        by_tenant: dict[str, tuple[list[str], list[Any]]] = {}
        for ev in events:
            d = domain.apply(Balance(), ev.as_event())
            key = balance_key(ev.tenant, ev.period)
            keys, args = by_tenant.setdefault(ev.tenant, ([key], [""]))
            keys.append(key)
            args += [ev.seq, d.granted, d.reserved, d.spent]
        call_script(client, script, list(by_tenant.values()))
    return apply


def events_per_s(client: RedisClient, apply: Callable[[list[StoredEvent]], Any],
                 events: list[StoredEvent], batch: int) -> float:
    client.flushdb()
    started = time.perf_counter()
    for at in range(0, len(events), batch):
        apply(events[at:at + batch])
    return len(events) / (time.perf_counter() - started)


def screens_per_s(gate: RedisAdmissionGate, n: int, levels: bool, first: int) -> float:
    gate.redis.flushdb()
    now_ms = int(time.time() * 1000)
    queries = [ScreenQuery(
        f"r{i}", "h", f"k{i % 1000}", now_ms // 60_000, f"t{i % 100}", "2026-12", 10**9, 100,
        0, 0, now_ms, 300, 10**12 if levels else None, f"team{i % 2}",
        10**12 if levels else None) for i in range(first, first + n)]
    started = time.perf_counter()
    for at in range(0, n, 128):
        gate.screen_many(queries[at:at + 128])
    return n / (time.perf_counter() - started)


def _alternate(rounds: int, run: Callable[[bool, int], float]) -> tuple[float, float, float]:
    base: list[float] = []
    new: list[float] = []
    for r in range(rounds):
        for with_levels in ((False, True) if r % 2 == 0 else (True, False)):
            (new if with_levels else base).append(run(with_levels, r))
    ratios = [b / a for a, b in zip(base, new, strict=True)]
    return statistics.median(base), statistics.median(new), statistics.median(ratios)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--redis-url", required=True)
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--screens", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--rounds", type=int, default=6)
    args = p.parse_args()
    client = connect_redis(args.redis_url, 0, "standalone")
    projection, before = RedisProjection(client), balance_only(client)
    events = history(args.events)
    gate = RedisAdmissionGate(client)
    events_per_s(client, projection.apply, events[:2000], args.batch)  # warm up: scripts
    events_per_s(client, before, events[:2000], args.batch)
    screens_per_s(gate, 2000, True, 0)
    base, new, ratio = _alternate(args.rounds, lambda lv, r: events_per_s(
        client, projection.apply if lv else before, events, args.batch))
    print(f"projection, balance only: {base:,.0f} events/s; with every level: {new:,.0f} "
          f"events/s; ratio (median of per-round ratios) {ratio:.2f}")
    base, new, ratio = _alternate(args.rounds, lambda lv, r: screens_per_s(
        gate, args.screens, lv, (r + 1) * 10**7 + (5 * 10**6 if lv else 0)))
    print(f"screen, no level limit: {base:,.0f} screens/s; key and team limited: {new:,.0f} "
          f"screens/s; ratio (median of per-round ratios) {ratio:.2f}")


if __name__ == "__main__":
    main()
