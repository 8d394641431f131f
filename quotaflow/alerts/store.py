"""The alerts' state in PostgreSQL (infra/migrations/0007_key_limits_alerts.sql): the alerts,
and what `quotaflow alerts run` keeps of the ledger topic.

`apply` is exactly once without Kafka transactions, as the analytics consumer is: a batch's
level changes, the deliveries they make due, the last stream version applied per tenant and
the next offsets commit in one transaction, and the consumer seeks to the stored offsets on
every assignment. A record read again (a replay from offset 0, a restart before the commit)
is skipped by its tenant's stream version; a crossing seen again inserts nothing, its
delivery's key being its webhook-id."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import psycopg

from quotaflow.alerts.rules import Alert, Level, crossings, level_changes
from quotaflow.events.payloads import LedgerEntry

Conn = psycopg.Connection[Any]
_LEVEL_UPSERT = (
    "INSERT INTO alert_levels (tenant_id, scope, scope_id, period, unit, spent, limit_value) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (tenant_id, scope, scope_id, period, unit)"
    " DO UPDATE SET spent = excluded.spent, limit_value = excluded.limit_value")
# A claimed delivery is not due again for this long: another sender (a second replica) leaves
# it alone while this one tries it.
CLAIM_S = 60


@dataclass(frozen=True)
class Delivery:
    """A due delivery: its body is sent as stored, under the same webhook-id every time."""

    webhook_id: str
    url: str
    secret: str
    body: str
    attempts: int


class PostgresAlertStore:
    """Alerts, levels and deliveries on one connection (autocommit; `apply` is a
    transaction). Given a connection provider (`adapters.postgres.Reconnecting`, as `alerts
    run` gives it), each call uses the connection it answers, so the process outlives a lost
    connection."""

    def __init__(self, conn: Conn | Callable[[], Conn]) -> None:
        self._connection: Callable[[], Conn] = conn if callable(conn) else (lambda: conn)

    @property
    def conn(self) -> Conn:
        """The connection the next statement runs on."""
        return self._connection()

    def add(self, tenant: str, scope: str, scope_id: str, threshold_percent: int, url: str,
            secret: str) -> int:
        """A new alert; its id."""
        row = self.conn.execute(
            "INSERT INTO budget_alerts (tenant_id, scope, scope_id, threshold_percent, url, "
            "secret) VALUES (%s, %s, %s, %s, %s, %s) RETURNING alert_id",
            (tenant, scope, scope_id, threshold_percent, url, secret)).fetchone()
        assert row is not None
        return int(row[0])

    def of_tenant(self, tenant: str) -> list[Alert]:
        """The tenant's alerts, oldest first."""
        rows = self.conn.execute(
            "SELECT alert_id, tenant_id, scope, scope_id, threshold_percent, url, secret "
            "FROM budget_alerts WHERE tenant_id = %s ORDER BY alert_id", (tenant,)).fetchall()
        return [Alert(*row) for row in rows]

    def remove(self, tenant: str, alert_id: int) -> bool:
        """Remove an alert of the tenant's (and its deliveries not yet made)."""
        row = self.conn.execute("DELETE FROM budget_alerts WHERE tenant_id = %s AND "
                                "alert_id = %s RETURNING alert_id", (tenant, alert_id))
        return row.fetchone() is not None

    def offsets(self, group: str, partitions: Sequence[tuple[str, int]]
                ) -> dict[tuple[str, int], int]:
        """The stored next offsets of `group`'s partitions (none for a partition never read)."""
        rows = self.conn.execute("SELECT topic, partition, next_offset FROM alert_offsets "
                                 "WHERE group_id = %s", (group,)).fetchall()
        wanted = set(partitions)
        return {(t, p): o for t, p, o in rows if (t, p) in wanted}

    def apply(self, group: str, entries: Sequence[LedgerEntry],
              next_offsets: dict[tuple[str, int], int], at: datetime) -> int:
        """Apply a batch of ledger entries, in order, with its offsets; the deliveries it made
        due (a crossing seen before makes none)."""
        made = 0
        with self.conn.transaction():
            tenants = sorted({e.tenant for e in entries})
            versions = dict(self.conn.execute(
                "SELECT tenant_id, stream_version FROM alert_streams WHERE tenant_id = ANY(%s)"
                " FOR UPDATE", (tenants,)).fetchall())
            levels: dict[tuple[str, str, str, str, str], Level] = {}
            due: dict[str, tuple[int, str]] = {}  # webhook-id -> alert, body: the first seen
            alerts: dict[str, list[Alert]] | None = None
            limits: dict[tuple[str, str, str, str], int] | None = None
            for e in entries:
                if e.stream_version <= versions.get(e.tenant, 0):
                    continue  # applied before: a replay or a redelivery
                versions[e.tenant] = e.stream_version
                for ch in level_changes(e):
                    key = (e.tenant, ch.scope, ch.id, e.period, ch.unit)
                    was = levels.get(key) or self._level(key)
                    limits = limits if limits is not None else self._limits(tenants, entries)
                    # The tenant's tokens are limited by its grants, in the ledger; the other
                    # limits are the levels' own, as they stand now.
                    fixed = limits.get((e.tenant, ch.scope, ch.id, ch.unit))
                    levels[key] = now = replace(
                        was, spent=was.spent + ch.spent,
                        limit=was.limit + ch.limit if fixed is None else fixed)
                    # Evaluated after each entry, so an event carries the spent that crossed.
                    alerts = alerts if alerts is not None else self._alerts(tenants)
                    for c in crossings(now, alerts.get(e.tenant, [])):
                        due.setdefault(c.webhook_id, (c.alert.alert_id, c.cloudevent(at)))
            for key, level in levels.items():
                self.conn.execute(_LEVEL_UPSERT, (*key, level.spent, level.limit))
            for webhook_id, (alert_id, body) in due.items():
                made += self.conn.execute(
                    "INSERT INTO alert_deliveries (webhook_id, alert_id, body) VALUES "
                    "(%s, %s, %s) ON CONFLICT (webhook_id) DO NOTHING",
                    (webhook_id, alert_id, body)).rowcount
            for tenant, version in versions.items():
                self.conn.execute(
                    "INSERT INTO alert_streams VALUES (%s, %s) ON CONFLICT (tenant_id) DO "
                    "UPDATE SET stream_version = excluded.stream_version", (tenant, version))
            for (topic, partition), offset in next_offsets.items():
                self.conn.execute(
                    "INSERT INTO alert_offsets VALUES (%s, %s, %s, %s) ON CONFLICT (group_id, "
                    "topic, partition) DO UPDATE SET next_offset = excluded.next_offset",
                    (group, topic, partition, offset))
        return made

    def _level(self, key: tuple[str, str, str, str, str]) -> Level:
        # Nothing else moves it meanwhile: a tenant's entries are on one partition, which one
        # consumer of the group holds at a time (and the versions' row lock covers a handover).
        row = self.conn.execute(
            "SELECT spent, limit_value FROM alert_levels WHERE tenant_id = %s AND scope = %s "
            "AND scope_id = %s AND period = %s AND unit = %s", key).fetchone()
        return Level(*key[1:], *(row or (0, 0)))

    def _limits(self, tenants: list[str], entries: Sequence[LedgerEntry]
                ) -> dict[tuple[str, str, str, str], int]:
        # (tenant, scope, id, unit) -> limit, 0 for none; the tenant's tokens are not here.
        keys = sorted({e.key_id for e in entries if e.key_id is not None})
        rows = self.conn.execute(
            "SELECT tenant_id, 'key', key_id, limit_tokens, limit_usd FROM api_keys "
            "WHERE key_id = ANY(%s) UNION ALL "
            "SELECT tenant_id, 'team', team_id, limit_tokens, limit_usd FROM teams "
            "WHERE tenant_id = ANY(%s) UNION ALL "
            "SELECT tenant_id, 'tenant', tenant_id, NULL, limit_usd FROM tenants "
            "WHERE tenant_id = ANY(%s)", (keys, tenants, tenants)).fetchall()
        out: dict[tuple[str, str, str, str], int] = {}
        for tenant, scope, level_id, tokens, usd in rows:
            if scope != "tenant":
                out[(tenant, scope, level_id, "tokens")] = tokens or 0
            out[(tenant, scope, level_id, "usd")] = usd or 0
        return out

    def _alerts(self, tenants: list[str]) -> dict[str, list[Alert]]:
        out: dict[str, list[Alert]] = {}
        for row in self.conn.execute(
                "SELECT alert_id, tenant_id, scope, scope_id, threshold_percent, url, secret "
                "FROM budget_alerts WHERE tenant_id = ANY(%s)", (tenants,)).fetchall():
            out.setdefault(row[1], []).append(Alert(*row))
        return out

    def claim_due(self, limit: int = 50) -> list[Delivery]:
        """Claim the deliveries due now (each for `CLAIM_S`), oldest first."""
        rows = self.conn.execute(
            "UPDATE alert_deliveries d SET next_attempt_at = now() + make_interval(secs => %s) "
            "FROM budget_alerts a WHERE a.alert_id = d.alert_id AND d.webhook_id IN ("
            "SELECT webhook_id FROM alert_deliveries WHERE delivered_at IS NULL AND "
            "next_attempt_at <= now() ORDER BY next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED)"
            " RETURNING d.webhook_id, a.url, a.secret, d.body, d.attempts",
            (CLAIM_S, limit)).fetchall()
        return [Delivery(*row) for row in rows]

    def delivered(self, webhook_id: str) -> None:
        """The receiver answered 2xx: never sent again."""
        self.conn.execute("UPDATE alert_deliveries SET delivered_at = now(), attempts = "
                          "attempts + 1, last_error = NULL WHERE webhook_id = %s",
                          (webhook_id,))

    def failed(self, webhook_id: str, error: str, retry_in_s: float) -> None:
        """The attempt failed: try again in `retry_in_s`."""
        self.conn.execute(
            "UPDATE alert_deliveries SET attempts = attempts + 1, last_error = %s, "
            "next_attempt_at = now() + make_interval(secs => %s) WHERE webhook_id = %s",
            (error[:500], retry_in_s, webhook_id))
