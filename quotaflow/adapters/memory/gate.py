"""An in-memory `AdmissionGate`: counts per key and minute, balances read from an in-memory
projection (as the Redis gate reads the Redis one), and the record of requests let through
(`forget_seen` drops it, as a flushed Redis would)."""

from __future__ import annotations

import threading
from collections import Counter

from quotaflow.adapters.memory.projection import MemoryProjection
from quotaflow.ledger.domain import Balance
from quotaflow.ports import Screening, ScreenQuery


class MemoryAdmissionGate:
    """Request counts by (key id, minute) over `projection`'s balances."""

    def __init__(self, projection: MemoryProjection | None = None) -> None:
        self.projection = projection or MemoryProjection()
        self._counts: Counter[tuple[str, int]] = Counter()
        self._seen: dict[str, str] = {}
        self._lock = threading.Lock()

    def screen(self, query: ScreenQuery) -> Screening:
        """The record, or the count and the balance (recording a request within both)."""
        q = query
        with self._lock:
            known = self._seen.get(q.request_id)
            if known is not None:
                return Screening(known, 0, Balance())
            self._counts[(q.key_id, q.minute)] += 1
            count = self._counts[(q.key_id, q.minute)]
            balance = self.projection.balance(q.tenant, q.period)
            within_quota = not balance.granted or balance.remaining >= q.needs_tokens
            if count <= q.rate_limit_per_min and within_quota:
                self._seen[q.request_id] = q.payload_hash
        return Screening(None, count, balance)

    def forget_seen(self) -> None:
        """Drop every record of requests let through (a Redis flush)."""
        with self._lock:
            self._seen.clear()
