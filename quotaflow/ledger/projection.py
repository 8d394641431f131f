"""The Redis projection of ledger balances, for admit's fast pre-check and `GET /v1/quota`.

Events are applied in ledger order by a Lua script (`infra/redis/apply_ledger.lua`), one call
per tenant, that records in each balance the last sequence applied to it, so applying the same
events twice changes nothing; the projection's last sequence then moves past them
(`advance_projection.lua`).

Why it heals the way it does. Redis may lose the projection at any time (a flush, a restart
without persistence, an eviction). Replaying the whole ledger to rebuild it would stall the
reserve step that notices for as long as the history is long (minutes, with millions of
events), and a catch-up that read events before the loss and applied them after it would
leave balances that count only those events, under-counted for good. So:

- A *generation* key is written when a projection is complete. `catch_up` reads it with the
  last sequence, and the last sequence does not move when the generation is no longer the one
  read: an apply whose read predates a flush does not advance the projection past a rebuild.
- A missing generation means the projection is lost (or new). It is rebuilt not from the
  events but from the ledger's `balances` snapshot in PostgreSQL (kept in each append's
  transaction, so equal to the replay), in chunks of a bounded number of rows, one chunk per
  `catch_up` call: its balances written tenant by tenant (`rebuild_balances.lua`, which never
  takes a hash back to an older sequence), then the chunk recorded by `rebuild_chunk.lua` only
  if the rebuild is still at the cursor the chunk was read from (two processes may both try:
  the second records nothing; a flush in between restarts it).
- Each chunk is read in one statement, so it is exact at one ledger sequence; its hashes
  record that sequence (field `seq`) and the apply script skips events at or below it. When
  the last chunk is written the generation starts again at the lowest such sequence, and the
  ordinary catch-up applies what came after, hash by hash.

So a call on the hot path reads at most `rows_per_call` snapshot rows plus `events_per_call`
events, whatever the length of the history; admit's pre-check lets a request through while a
balance is missing (reserve decides), so a rebuild in progress refuses no one.

Why the keys are tagged with the tenant (`qf:{tenant}:balance:<period>`, and its budget
levels' `qf:{tenant}:level:...`, `quotaflow.ledger.level_projection`). On a Redis Cluster a
script may touch the keys of one hash slot only, and the hash tag (the part in braces) picks
the slot. Every script call that reads or writes a balance or a level is about one tenant
(applying its events, writing its rebuilt hashes, admit's screen, which also touches its
request records and its keys' windows: `quotaflow.adapters.redis_gate`), so the tenant is the
tag: one call stays in one slot, and tenants spread over the cluster. The projection's own
state (last sequence, generation, rebuild) is tagged `{projection}`, one slot of its own.
So an apply is one script call per tenant, each exact on its own because every hash records
the sequence it is exact at (field `seq`); the last sequence moves after them, and only if
the generation is still the one read. On one Redis each call also checks the generation, so
an apply read before a loss writes nothing after it. On a cluster it cannot (the generation
is in another slot): such an apply may write its tenants' hashes from the late events alone,
until the rebuild writes each of them again from a snapshot later than anything read before
the loss (admit's pre-check may be off for those tenants meanwhile; reserve decides).

A Redis Cluster node that loses its data while the node holding the generation keeps it is
not noticed here; `quotaflow audit` reports the difference and `quotaflow projection rebuild`
repairs it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import astuple
from typing import Any

from quotaflow.adapters.redis_client import (
    RedisClient,
    RedisMode,
    call_script,
    connect_redis,
    is_cluster,
)
from quotaflow.events.resources import data_path
from quotaflow.events.status import LevelScope
from quotaflow.ledger import domain
from quotaflow.ledger.budgets import LevelBalance
from quotaflow.ledger.commands import StoredEvent
from quotaflow.ledger.domain import Balance
from quotaflow.ledger.level_projection import (
    LEVEL_FIELDS,
    LEVEL_PATTERN,
    PREFIX,
    LevelKey,
    event_levels,
    level_balance,
    level_delta,
    level_key,
    parse_level_key,
    tenant_period,
)
from quotaflow.ledger.level_projection import balance_key as balance_key  # re-exported
from quotaflow.ledger.level_projection import tenant_tag as tenant_tag  # re-exported
from quotaflow.ports import Ledger

LAST_SEQ_KEY = PREFIX + "{projection}:last_seq"
# `:2` since the budget levels are projected: a projection from before has none, and, its
# generation not found, is rebuilt with them on first use (`clear` drops the old key).
GENERATION_KEY = PREFIX + "{projection}:generation:2"
_BEFORE_LEVELS = PREFIX + "{projection}:generation"
REBUILD_KEY = PREFIX + "{projection}:rebuild"
# The layout before keys were tagged for Redis Cluster: `clear` (and so a rebuild) drops it.
_UNTAGGED = (PREFIX + "balance:*", PREFIX + "projection:*")
_BALANCES = PREFIX + "{*}:balance:*"
_BALANCE_FIELDS = ("granted", "reserved", "spent")
_START = json.dumps(["", ""])


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


class RedisProjection:
    """The `Projection` in Redis: one hash per (tenant, period) and one per budget level and
    period, the last sequence applied and the generation they belong to."""

    def __init__(self, client: RedisClient, events_per_call: int = 2000,
                 rows_per_call: int = 500) -> None:
        self.redis = client
        self.events_per_call = events_per_call
        self.rows_per_call = rows_per_call
        scripts = data_path("redis")
        self._apply_script, self._advance_script, self._start_script, self._balances_script, \
            self._chunk_script = (client.register_script((scripts / f"{name}.lua").read_text())
                                  for name in ("apply_ledger", "advance_projection",
                                               "rebuild_start", "rebuild_balances",
                                               "rebuild_chunk"))

    @classmethod
    def connect(cls, url: str, timeout_ms: int = 0,
                mode: RedisMode = "standalone") -> RedisProjection:
        return cls(connect_redis(url, timeout_ms, mode))

    def apply(self, events: Sequence[StoredEvent]) -> int:
        """Apply events (ascending seq) whatever the generation; returns how many were new."""
        return max(0, self._apply(events, ""))

    def _apply(self, events: Sequence[StoredEvent], generation: str) -> int:
        """-1 if the generation is no longer `generation` (the last sequence did not move)."""
        if not events:
            return 0
        # One Redis checks the generation in every call; a cluster cannot (another slot).
        checked = not is_cluster(self.redis)
        by_tenant: dict[str, tuple[list[str], list[Any]]] = {}
        for ev in events:
            d = domain.apply(Balance(), ev.as_event())
            key = balance_key(ev.tenant, ev.period)
            keys, args = by_tenant.setdefault(ev.tenant, (
                [GENERATION_KEY if checked else key], [generation if checked else ""]))
            # The balance hash, then its levels': the levels move by the balance's token
            # deltas (`level_projection.level_delta` and `domain.apply` agree) and their money.
            levels = event_levels(ev)
            keys.append(key)
            keys += [level_key(ev.tenant, scope, lid, ev.period) for scope, lid in levels]
            u = level_delta(ev)
            args += [ev.seq, 1 + len(levels), d.granted, d.reserved, d.spent, u.reserved_usd,
                     u.spent_usd]
        replies = [int(n) for n in call_script(self.redis, self._apply_script,
                                               list(by_tenant.values()))]
        if min(replies) < 0:
            return -1
        last = self._advance_script(keys=[LAST_SEQ_KEY, GENERATION_KEY],
                                    args=[generation, events[-1].seq])
        return -1 if int(last) < 0 else sum(replies)

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
        raw_token, raw_cursor = self._start_script(keys=[REBUILD_KEY],
                                                   args=[uuid.uuid4().hex, _START])
        token, cursor = _text(raw_token), _text(raw_cursor)
        tenant, period = json.loads(cursor)
        seq, rows = ledger.balance_snapshot((tenant, period), self.rows_per_call)
        last = len(rows) < self.rows_per_call
        after = json.dumps([rows[-1][0], rows[-1][1]]) if rows else cursor
        # The chunk's levels, read after its balances in a statement of their own: exact at
        # their own sequence, which their hashes record (never earlier than the balances').
        level_seq, levels = ledger.level_snapshot([(t, p) for t, p, _ in rows])
        calls: dict[tuple[str, str], tuple[list[str], list[Any]]] = {}
        for t, p, b in rows:
            keys, args = calls.setdefault((t, "b"), ([], [seq, 3, *_BALANCE_FIELDS]))
            keys.append(balance_key(t, p))
            args += astuple(b)
        for r in levels:
            keys, args = calls.setdefault((r.tenant, "l"), ([], [level_seq, 4, *LEVEL_FIELDS]))
            keys.append(level_key(r.tenant, r.scope, r.level_id, r.period))
            args += astuple(r.balance)
        call_script(self.redis, self._balances_script, list(calls.values()))
        written = self._chunk_script(keys=[REBUILD_KEY, GENERATION_KEY, LAST_SEQ_KEY],
                                     args=[token, cursor, after, min(seq, level_seq),
                                           "1" if last else "0"])
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
        return {key: self.balance(*key) for key in
                (tenant_period(_text(k)) for k in self.redis.scan_iter(match=_BALANCES,
                                                                        count=1000))}

    def level(self, tenant: str, scope: LevelScope, level_id: str, period: str) -> LevelBalance:
        """One level's projected balance; `level_id` as in level_balances."""
        return level_balance(self.redis.hgetall(  # type: ignore[arg-type]
            level_key(tenant, scope, level_id, period)))

    def levels(self, tenant: str | None = None) -> dict[LevelKey, LevelBalance]:
        """Every projected level (`tenant`'s, if given), keyed as the audit's replay is."""
        match = LEVEL_PATTERN if tenant is None else tenant_tag(tenant) + "level:*"
        return {parse_level_key(_text(k)): level_balance(self.redis.hgetall(k))  # type: ignore[arg-type]
                for k in self.redis.scan_iter(match=match, count=1000)}

    def clear(self) -> None:
        """Drop every balance, the last sequence, the generation and any rebuild under way
        (and what an older version stored under untagged keys)."""
        pipe = self.redis.pipeline(transaction=False)  # one key a command: any slot
        for pattern in (_BALANCES, LEVEL_PATTERN, *_UNTAGGED):
            for key in self.redis.scan_iter(match=pattern, count=1000):
                pipe.delete(key)
        for key in (LAST_SEQ_KEY, GENERATION_KEY, REBUILD_KEY, _BEFORE_LEVELS):
            pipe.delete(key)
        pipe.execute()

    def rebuild(self, ledger: Ledger) -> int:
        """Drop the projection and build it again from the ledger; returns how many events
        were applied after the snapshot."""
        self.clear()
        return self.sync(ledger)
