"""admit's fast checks on Redis: the key's request count in its one-minute window and the
tenant's projected balance, in one pipelined round trip."""

from __future__ import annotations

from dataclasses import fields

import redis

from quotaflow.adapters.redis_client import connect_redis as connect_redis  # re-exported
from quotaflow.ledger.domain import Balance
from quotaflow.ledger.projection import PREFIX, balance_key

WINDOW_TTL_S = 120  # a window outlives its minute, so a late request still counts in it


def window_key(key_id: str, minute: int) -> str:
    """The counter of `key_id`'s requests in minute `minute` (Unix seconds // 60)."""
    return f"{PREFIX}rate:{key_id}:{minute}"


def _balance(raw: dict[bytes, bytes]) -> Balance:
    # The projection's hash holds one integer field per Balance field; a missing hash is zero.
    return Balance(**{f.name: int(raw.get(f.name.encode(), 0)) for f in fields(Balance)})


class RedisAdmissionGate:
    """The `AdmissionGate` over the Redis projection (redis-py clients are thread-safe)."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def check(self, key_id: str, minute: int, tenant: str, period: str) -> tuple[int, Balance]:
        """Count this request in its window and read the balance, in one round trip."""
        window = window_key(key_id, minute)
        pipe = self.redis.pipeline(transaction=False)
        pipe.incr(window)
        pipe.expire(window, WINDOW_TTL_S)
        pipe.hgetall(balance_key(tenant, period))
        count, _, raw = pipe.execute()
        return int(count), _balance(raw)
