"""An in-memory `Projection`: the ledger's balances by (tenant, period) and its budget levels
by (scope, level id, period), applied in ledger order with `domain.apply` and
`level_projection.level_delta`; an event at or below the last applied sequence is skipped, as
the Redis projection's script does."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import astuple

from quotaflow.events.status import LevelScope
from quotaflow.ledger import domain
from quotaflow.ledger.budgets import LevelBalance
from quotaflow.ledger.commands import StoredEvent
from quotaflow.ledger.domain import Balance
from quotaflow.ledger.level_projection import LevelKey, event_levels, level_delta
from quotaflow.ports import Ledger


class MemoryProjection:
    """Balances in a dictionary, with the last sequence applied."""

    def __init__(self) -> None:
        self._balances: dict[tuple[str, str], Balance] = {}
        self._levels: dict[LevelKey, LevelBalance] = {}
        self._last_seq = 0

    def apply(self, events: Sequence[StoredEvent]) -> int:
        """Apply events (ascending seq); returns how many were new."""
        applied = 0
        for ev in events:
            if ev.seq <= self._last_seq:
                continue
            key = (ev.tenant, ev.period)
            self._balances[key] = domain.apply(self._balances.get(key, Balance()), ev.as_event())
            d = level_delta(ev)
            for scope, level_id in event_levels(ev):
                k = (scope.value, level_id, ev.period)
                b = self._levels.get(k, LevelBalance())
                self._levels[k] = LevelBalance(*(x + y for x, y in zip(astuple(b), astuple(d),
                                                                       strict=True)))
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

    def level(self, tenant: str, scope: LevelScope, level_id: str, period: str) -> LevelBalance:
        """One level's projected balance (zero if never moved); `level_id` as in
        level_balances (a team's is `tenant/team`)."""
        return self._levels.get((scope.value, level_id, period), LevelBalance())

    def levels(self) -> dict[LevelKey, LevelBalance]:
        """Every projected budget level by (scope, level_id, period)."""
        return dict(self._levels)

    def last_seq(self) -> int:
        return self._last_seq
