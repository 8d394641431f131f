"""The Redis projection of ledger balances, for admit's fast pre-check and `GET /v1/quota`.

Events are applied in ledger order by one Lua script that also records the last sequence it
applied, so applying the same events twice changes nothing and a rebuild from PostgreSQL
gives the same balances."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis

from events.resources import data_path
from quotaflow.ledger import domain
from quotaflow.ledger.commands import StoredEvent
from quotaflow.ledger.domain import Balance
from quotaflow.ports import Ledger

PREFIX = "qf:"
LAST_SEQ_KEY = PREFIX + "projection:last_seq"


def balance_key(tenant: str, period: str) -> str:
    """The Redis hash of one (tenant, period) balance."""
    return f"{PREFIX}balance:{tenant}:{period}"


class RedisProjection:
    """The `Projection` in Redis: one hash per (tenant, period) and the last sequence applied."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._script = client.register_script((data_path("redis") / "apply_ledger.lua").read_text())

    @classmethod
    def connect(cls, url: str) -> RedisProjection:
        return cls(redis.Redis.from_url(url))

    def apply(self, events: Sequence[StoredEvent]) -> int:
        """Apply events (ascending seq); returns how many were new."""
        if not events:
            return 0
        keys = [LAST_SEQ_KEY]
        args: list[Any] = []
        for ev in events:
            d = domain.apply(Balance(), ev.as_event())
            keys.append(balance_key(ev.tenant, ev.period))
            args += [ev.seq, d.granted, d.reserved, d.spent]
        applied, _last = self._script(keys=keys, args=args)
        return int(applied)

    def catch_up(self, ledger: Ledger, batch: int = 5000) -> int:
        """Apply every ledger event after the last one applied; returns how many were new."""
        total = 0
        while True:
            events = ledger.events_after(self.last_seq(), batch)
            total += self.apply(events)
            if len(events) < batch:
                return total

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
        """Drop every balance and the last sequence."""
        keys = list(self.redis.scan_iter(match=f"{PREFIX}balance:*", count=1000))
        pipe = self.redis.pipeline()
        for k in keys:
            pipe.delete(k)
        pipe.delete(LAST_SEQ_KEY)
        pipe.execute()

    def rebuild(self, ledger: Ledger) -> int:
        """Drop the projection and replay the whole ledger into it."""
        self.clear()
        return self.catch_up(ledger)
