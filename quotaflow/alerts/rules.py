"""The alert rules, with no I/O: a level's spent against its limit, the alerts it crosses, and
the one CloudEvent each crossing sends.

A crossing is keyed by (alert, level, period, unit, threshold): its webhook-id is derived from
those alone, so however often the evaluator sees a level at or above a threshold (a replay of
the ledger topic, a restart, the next entry of the same period), the store keeps one delivery
for it; the next period is another key, and crosses again."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

from quotaflow.events.payloads import LedgerEntry
from quotaflow.events.status import LedgerKind

EVENT_TYPE = "dev.quotaflow.budget.threshold"
SOURCE = "/quotaflow/alerts"


@dataclass(frozen=True)
class Level:
    """One level's spent and limit in a period, in one unit (tokens, or usd in micro-dollars);
    a limit of 0 is no limit."""

    scope: str  # tenant | team | key
    id: str
    period: str
    unit: str  # tokens | usd
    spent: int
    limit: int


@dataclass(frozen=True)
class Alert:
    """An alert on a level of a tenant's: POST to `url`, signed with `secret`, when its spent
    reaches `threshold_percent` of its limit."""

    alert_id: int
    tenant: str
    scope: str
    scope_id: str
    threshold_percent: int
    url: str
    secret: str


@dataclass(frozen=True)
class Crossing:
    """An alert whose level has reached its threshold: the delivery to make once."""

    alert: Alert
    level: Level

    @property
    def webhook_id(self) -> str:
        """The same for every retry and every replay of this crossing, another next period."""
        a, lv = self.alert, self.level
        key = f"{a.alert_id}\x00{lv.scope}\x00{lv.id}\x00{lv.period}\x00{lv.unit}\x00" \
              f"{a.threshold_percent}"
        return "msg_" + hashlib.sha256(key.encode()).hexdigest()[:32]

    def cloudevent(self, at: datetime) -> str:
        """The structured-mode CloudEvent (JSON) of this crossing, as POSTed."""
        lv = self.level
        return json.dumps({
            "specversion": "1.0", "type": EVENT_TYPE, "source": SOURCE,
            "id": self.webhook_id, "time": at.isoformat().replace("+00:00", "Z"),
            "subject": f"{lv.scope}/{lv.id}", "datacontenttype": "application/json",
            "data": {"scope": lv.scope, "id": lv.id, "period": lv.period, "unit": lv.unit,
                     "threshold_percent": self.alert.threshold_percent,
                     "spent": _amount(lv.unit, lv.spent), "limit": _amount(lv.unit, lv.limit)}},
            separators=(",", ":"), sort_keys=True)


def _amount(unit: str, value: int) -> int | str:
    # Money travels as a decimal string of dollars, tokens as integers.
    if unit == "usd":
        return f"{value // 1_000_000}.{value % 1_000_000:06d}"
    return value


def reached(level: Level, threshold_percent: int) -> bool:
    """Whether `level`'s spent is at or above `threshold_percent` of its limit (exact
    integers: spent * 100 >= percent * limit)."""
    return level.limit > 0 and level.spent * 100 >= threshold_percent * level.limit


def crossings(level: Level, alerts: list[Alert]) -> list[Crossing]:
    """The alerts on `level` whose threshold it has reached."""
    return [Crossing(a, level) for a in alerts
            if (a.scope, a.scope_id) == (level.scope, level.id)
            and reached(level, a.threshold_percent)]


@dataclass(frozen=True)
class Change:
    """What one ledger entry adds to one level's spent, in one unit, and to its limit (only a
    grant moves a limit: the tenant's tokens; the other limits are the levels' own)."""

    scope: str
    id: str
    unit: str
    spent: int
    limit: int = 0


def level_changes(entry: LedgerEntry) -> list[Change]:
    """What a ledger entry (schema v2) adds to its levels: a grant raises the tenant's token
    limit; a settlement's charge (tokens and micro-dollars) is spent at its tenant, its team
    and its key. Reservations, releases, expiries and rejections spend nothing; a zero adds
    nothing."""
    if entry.kind is LedgerKind.QUOTA_GRANTED:
        return [Change("tenant", entry.tenant, "tokens", 0, entry.amount)] if entry.amount else []
    if entry.kind is not LedgerKind.RESERVATION_SETTLED:
        return []
    levels = [("tenant", entry.tenant), ("team", entry.team_id), ("key", entry.key_id)]
    return [Change(scope, level_id, unit, spent)
            for scope, level_id in levels if level_id is not None
            for unit, spent in (("tokens", entry.amount), ("usd", entry.usd)) if spent]
