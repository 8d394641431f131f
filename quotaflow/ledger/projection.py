"""The Redis projection of ledger balances, for admit's fast pre-check and `GET /v1/quota`.

Events are applied in ledger order by one Lua script (`infra/redis/apply_ledger.lua`) that
also records the last sequence it applied, so applying the same events twice changes nothing.

Why it heals the way it does. Redis may lose the projection at any time (a flush, a restart
without persistence, an eviction). Replaying the whole ledger to rebuild it would stall the
reserve step that notices for as long as the history is long (minutes, with millions of
events), and a catch-up that read events before the loss and applied them after it would
leave balances that count only those events, under-counted for good. So:

- A *generation* key is written when a projection is complete. `catch_up` reads it with the
  last sequence, and the apply script refuses the call when the generation is no longer the
  one read: an apply whose read predates a flush changes nothing.
- A missing generation means the projection is lost (or new). It is rebuilt not from the
  events but from the ledger's `balances` snapshot in PostgreSQL (kept in each append's
  transaction, so equal to the replay), in chunks of a bounded number of rows, one chunk per
  `catch_up` call, each written atomically by `infra/redis/rebuild_chunk.lua` and only if the
  rebuild is still at the cursor the chunk was read from (two processes may both try: the
  second writes nothing; a flush in between restarts it).
- Each chunk is read in one statement, so it is exact at one ledger sequence; its hashes
  record that sequence (field `seq`) and the apply script skips events at or below it. When
  the last chunk is written the generation starts again at the lowest such sequence, and the
  ordinary catch-up applies what came after, hash by hash.

So a call on the hot path reads at most `rows_per_call` snapshot rows plus `events_per_call`
events, whatever the length of the history; admit's pre-check lets a request through while a
balance is missing (reserve decides), so a rebuild in progress refuses no one."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

import redis

from events.resources import data_path
from quotaflow.adapters.redis_client import connect_redis
from quotaflow.ledger import domain
from quotaflow.ledger.commands import StoredEvent
from quotaflow.ledger.domain import Balance
from quotaflow.ports import Ledger

PREFIX = "qf:"
LAST_SEQ_KEY = PREFIX + "projection:last_seq"
GENERATION_KEY = PREFIX + "projection:generation"
REBUILD_KEY = PREFIX + "projection:rebuild"
_START = json.dumps(["", ""])


def balance_key(tenant: str, period: str) -> str:
    """The Redis hash of one (tenant, period) balance."""
    return f"{PREFIX}balance:{tenant}:{period}"


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


class RedisProjection:
    """The `Projection` in Redis: one hash per (tenant, period), the last sequence applied
    and the generation they belong to."""

    def __init__(self, client: redis.Redis, events_per_call: int = 2000,
                 rows_per_call: int = 500) -> None:
        self.redis = client
        self.events_per_call = events_per_call
        self.rows_per_call = rows_per_call
        scripts = data_path("redis")
        self._apply_script = client.register_script(
            (scripts / "apply_ledger.lua").read_text())
        self._chunk_script = client.register_script(
            (scripts / "rebuild_chunk.lua").read_text())

    @classmethod
    def connect(cls, url: str, timeout_ms: int = 0) -> RedisProjection:
        return cls(connect_redis(url, timeout_ms))

    def apply(self, events: Sequence[StoredEvent]) -> int:
        """Apply events (ascending seq) whatever the generation; returns how many were new."""
        return max(0, self._apply(events, ""))

    def _apply(self, events: Sequence[StoredEvent], generation: str) -> int:
        """-1 if the generation is no longer `generation` (the call changed nothing)."""
        if not events:
            return 0
        keys = [LAST_SEQ_KEY, GENERATION_KEY]
        args: list[Any] = [generation]
        for ev in events:
            d = domain.apply(Balance(), ev.as_event())
            keys.append(balance_key(ev.tenant, ev.period))
            args += [ev.seq, d.granted, d.reserved, d.spent]
        applied, _last = self._apply_script(keys=keys, args=args)
        return int(applied)

    def catch_up(self, ledger: Ledger) -> int:
        """One bounded step towards the ledger: a chunk of a rebuild if the projection was
        lost, else (and after a rebuild's last chunk) up to `events_per_call` new events.
        Returns how many events were applied."""
        return self._step(ledger)[0]

    def sync(self, ledger: Ledger) -> int:
        """Catch up completely (tools and tests; the steps call `catch_up`)."""
        total = 0
        while True:
            applied, done = self._step(ledger)
            total += applied
            if done:
                return total

    def _step(self, ledger: Ledger) -> tuple[int, bool]:
        generation, last = self.redis.mget(GENERATION_KEY, LAST_SEQ_KEY)
        if generation is None:
            if not self._rebuild_chunk(ledger):
                return 0, False
            generation, last = self.redis.mget(GENERATION_KEY, LAST_SEQ_KEY)
            if generation is None:  # lost again since the rebuild's last chunk
                return 0, False
        events = ledger.events_after(int(last or 0), self.events_per_call)
        applied = self._apply(events, _text(generation))
        if applied < 0:
            return 0, False
        return applied, len(events) < self.events_per_call

    def _rebuild_chunk(self, ledger: Ledger) -> bool:
        """Write one chunk of the rebuild; True once the projection is complete again."""
        pipe = self.redis.pipeline()  # MULTI: a new rebuild starts whole or not at all
        pipe.hsetnx(REBUILD_KEY, "token", uuid.uuid4().hex)
        pipe.hsetnx(REBUILD_KEY, "cursor", _START)
        pipe.hmget(REBUILD_KEY, ["token", "cursor"])
        raw_token, raw_cursor = pipe.execute()[-1]
        token, cursor = _text(raw_token), _text(raw_cursor)
        tenant, period = json.loads(cursor)
        seq, rows = ledger.balance_snapshot((tenant, period), self.rows_per_call)
        last = len(rows) < self.rows_per_call
        after = json.dumps([rows[-1][0], rows[-1][1]]) if rows else cursor
        args: list[Any] = [token, cursor, after, seq, "1" if last else "0"]
        for _, _, b in rows:
            args += [b.granted, b.reserved, b.spent]
        written = self._chunk_script(
            keys=[REBUILD_KEY, GENERATION_KEY, LAST_SEQ_KEY,
                  *(balance_key(t, p) for t, p, _ in rows)], args=args)
        return int(written) == 2 or (int(written) == 0 and
                                     self.redis.get(GENERATION_KEY) is not None)

    def last_seq(self) -> int:
        raw = self.redis.get(LAST_SEQ_KEY)
        return int(raw) if raw else 0

    def balance(self, tenant: str, period: str) -> Balance:
        raw: dict[bytes, bytes] = self.redis.hgetall(balance_key(tenant, period))  # type: ignore[assignment]
        return Balance(int(raw.get(b"granted", 0)), int(raw.get(b"reserved", 0)),
                       int(raw.get(b"spent", 0)))

    def balances(self) -> dict[tuple[str, str], Balance]:
        """Every projected balance (the audit compares them with the replay)."""
        out: dict[tuple[str, str], Balance] = {}
        for key in self.redis.scan_iter(match=f"{PREFIX}balance:*", count=1000):
            _, _, rest = key.decode().partition(f"{PREFIX}balance:")
            tenant, _, period = rest.rpartition(":")
            out[(tenant, period)] = self.balance(tenant, period)
        return out

    def clear(self) -> None:
        """Drop every balance, the last sequence, the generation and any rebuild under way."""
        keys = list(self.redis.scan_iter(match=f"{PREFIX}balance:*", count=1000))
        pipe = self.redis.pipeline()
        for k in keys:
            pipe.delete(k)
        pipe.delete(LAST_SEQ_KEY, GENERATION_KEY, REBUILD_KEY)
        pipe.execute()

    def rebuild(self, ledger: Ledger) -> int:
        """Drop the projection and build it again from the ledger; returns how many events
        were applied after the snapshot."""
        self.clear()
        return self.sync(ledger)
