"""An in-memory `AdmissionGate`: counts per key and minute, balances read from an in-memory
projection (as the Redis gate reads the Redis one)."""

from __future__ import annotations

import threading
from collections import Counter

from quotaflow.adapters.memory.projection import MemoryProjection
from quotaflow.ledger.domain import Balance


class MemoryAdmissionGate:
    """Request counts by (key id, minute) over `projection`'s balances."""

    def __init__(self, projection: MemoryProjection | None = None) -> None:
        self.projection = projection or MemoryProjection()
        self._counts: Counter[tuple[str, int]] = Counter()
        self._lock = threading.Lock()

    def check(self, key_id: str, minute: int, tenant: str, period: str) -> tuple[int, Balance]:
        """Count this request in its window and read the balance."""
        with self._lock:
            self._counts[(key_id, minute)] += 1
            count = self._counts[(key_id, minute)]
        return count, self.projection.balance(tenant, period)
