"""An in-memory `Projection`: the ledger's balances by (tenant, period), applied in ledger
order with `domain.apply`; an event at or below the last applied sequence is skipped, as the
Redis projection's script does."""

from __future__ import annotations

from collections.abc import Sequence

from quotaflow.ledger import domain
from quotaflow.ledger.commands import StoredEvent
from quotaflow.ledger.domain import Balance
from quotaflow.ports import Ledger


class MemoryProjection:
    """Balances in a dictionary, with the last sequence applied."""

    def __init__(self) -> None:
        self._balances: dict[tuple[str, str], Balance] = {}
        self._last_seq = 0

    def apply(self, events: Sequence[StoredEvent]) -> int:
        """Apply events (ascending seq); returns how many were new."""
        applied = 0
        for ev in events:
            if ev.seq <= self._last_seq:
                continue
            key = (ev.tenant, ev.period)
            self._balances[key] = domain.apply(self._balances.get(key, Balance()), ev.as_event())
            self._last_seq = ev.seq
            applied += 1
        return applied

    def catch_up(self, ledger: Ledger, batch: int = 5000) -> int:
        """Apply every ledger event after the last one applied; returns how many were new."""
        total = 0
        while True:
            events = ledger.events_after(self._last_seq, batch)
            total += self.apply(events)
            if len(events) < batch:
                return total

    def balance(self, tenant: str, period: str) -> Balance:
        return self._balances.get((tenant, period), Balance())

    def balances(self) -> dict[tuple[str, str], Balance]:
        """Every projected balance."""
        return dict(self._balances)

    def last_seq(self) -> int:
        return self._last_seq
