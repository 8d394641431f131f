"""The ledger's PostgreSQL event store.

Each call decides a batch of commands in ONE statement and so one transaction (group commit):
the SQL functions of `infra/migrations/0002_ledger_functions.sql` lock the tenants' stream rows
(sorted, so concurrent batches cannot deadlock; this serializes decisions per tenant, which is
what makes the quota exact under concurrency), look up idempotency records (a redelivered
command returns its first outcome unchanged), decide by the rules of `domain`, take the
ledger's append lock and append (commits happen in sequence order, so a reader that tails
`seq > last` never skips an event whose transaction commits late), and update the balances
snapshot, the reservations and the idempotency records.

The rules are written twice on purpose: `domain` is the readable, pure statement of them (the
audit replays with it); the SQL runs them next to the data, because a decision made in Python
cost a dozen statements and two round trips a batch (BENCHMARKS.md, ledger).
`tests/ledger/test_sql_rules.py` checks that the two agree on random batches, against
`quotaflow.adapters.memory.ledger.MemoryLedger` (the rules of `domain` in memory).
The caller commits Kafka offsets only after a call returns.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors

from quotaflow.adapters.postgres import OnConnection
from quotaflow.events.status import LevelScope
from quotaflow.ledger.budgets import LevelBalance, period_in_zone
from quotaflow.ledger.commands import (
    EndCommand,
    Outcome,
    ReleaseReservation,
    ReserveTokens,
    SettleReservation,
    StoredEvent,
)
from quotaflow.ledger.domain import Balance, Kind
from quotaflow.ledger.level_projection import LevelRow

log = logging.getLogger(__name__)
T = TypeVar("T")
Conn = psycopg.Connection[Any]


_RETRYABLE = (pg_errors.UniqueViolation, pg_errors.DeadlockDetected,
              pg_errors.SerializationFailure)

OUTCOME_COLUMNS = "request_id, tenant, kind, period, amount, released, seq, reason, reserved"
EVENT_COLUMNS = ("seq, tenant_id, stream_version, kind, request_id, period, amount, released, "
                 "reason, recorded_at, key_id, team_id, usd, usd_released, model, price_version, "
                 "input_tokens")
# A stored kind as its enum member (an outcome's None stays None). A lookup, not `Kind(...)`:
# on this project's 2-core machine the lookup took 80 ns and the enum call 880 ns, and a batch
# decides a request in tens of microseconds.
_KIND = {k.value: k for k in Kind}
_KINDS = _KIND.get


def row_to_event(row: Sequence[Any]) -> StoredEvent:
    """A `ledger_events` row, read in `EVENT_COLUMNS` order."""
    return StoredEvent(row[0], row[1], row[2], _KIND[row[3]], *row[4:])


class PostgresLedger(OnConnection):
    """The ledger on an autocommit connection: each command call is one statement and so
    one transaction, committed when it returns; or on a connection provider (`OnConnection`)."""

    # -- commands ---------------------------------------------------------------------

    def reserve(self, commands: Sequence[ReserveTokens]) -> list[Outcome]:
        """Reserve each command's tokens and money at every level, or reject it (the reserve
        step)."""
        return self._call("ledger_reserve(%b::text[], %b::text[], %b::bigint[], %b::text[], "
                          "%b::text[], %b::text[], %b::bigint[])",
                          [c.tenant for c in commands], [c.request_id for c in commands],
                          [c.amount for c in commands], [c.payload_hash for c in commands],
                          [c.key_id for c in commands], [c.model or None for c in commands],
                          [c.input_tokens for c in commands])

    def end(self, commands: Sequence[EndCommand]) -> list[Outcome]:
        """Settle or release reservations (the settle step)."""
        return self._call(
            "ledger_end(%b::text[], %b::text[], %b::bigint[], %b::text[], %b::text[])",
            [c.tenant for c in commands], [c.request_id for c in commands],
            [c.actual_tokens if isinstance(c, SettleReservation) else None for c in commands],
            [c.reason if isinstance(c, ReleaseReservation) else None for c in commands],
            [c.payload_hash for c in commands])

    def expire_stale(self, ttl_s: int, limit: int = 1000) -> list[Outcome]:
        """Expire reservations older than `ttl_s` by the ledger's own clock."""
        return self._call("ledger_expire(%s, %s)", ttl_s, limit)

    def grant(self, tenant: str, tokens: int, period: str | None = None) -> Outcome:
        """Grant `tokens` for `period` (default: the tenant's current one)."""
        try:
            (outcome,) = self._call("ledger_grant(%s, %s, %s)", tenant, tokens, period)
        except pg_errors.NoDataFound:
            raise LookupError(f"unknown tenant {tenant!r}") from None
        return outcome

    # -- reads ------------------------------------------------------------------------

    def balance(self, tenant: str, period: str) -> Balance:
        """The balances snapshot, as of the last commit."""
        row = self.conn.execute(
            "SELECT granted, reserved, spent FROM balances WHERE tenant_id=%s AND period=%s",
            (tenant, period)).fetchone()
        return Balance(*row) if row else Balance()

    def current_period(self, tenant: str) -> str:
        """The tenant's period by PostgreSQL's clock, the one the decisions use."""
        row = self.conn.execute(
            "SELECT plan_period, now(), time_zone FROM tenants WHERE tenant_id = %s",
            (tenant,)).fetchone()
        if row is None:
            raise LookupError(f"unknown tenant {tenant!r}")
        return period_in_zone(row[0], row[1], row[2])

    def events_after(self, seq: int, limit: int = 10_000) -> list[StoredEvent]:
        """Committed events above `seq`, in sequence order."""
        rows = self.conn.execute(
            f"SELECT {EVENT_COLUMNS} FROM ledger_events WHERE seq > %s ORDER BY seq LIMIT %s",
            (seq, limit)).fetchall()
        return [row_to_event(r) for r in rows]

    def balance_snapshot(self, after: tuple[str, str],
                         limit: int) -> tuple[int, list[tuple[str, str, Balance]]]:
        """Up to `limit` rows of the balances snapshot after (tenant, period) in key order,
        and the last sequence they include: one statement, so one snapshot, and commits
        happen in sequence order, so the rows are the replay of every event up to it."""
        rows = self.conn.execute(
            "WITH w AS (SELECT coalesce(max(seq), 0) AS seq FROM ledger_events) "
            "SELECT w.seq, b.tenant_id, b.period, b.granted, b.reserved, b.spent FROM w "
            "LEFT JOIN LATERAL (SELECT * FROM balances WHERE (tenant_id, period) > (%s, %s) "
            "ORDER BY tenant_id, period LIMIT %s) b ON true", (*after, limit)).fetchall()
        return int(rows[0][0]), [(r[1], r[2], Balance(r[3], r[4], r[5]))
                                 for r in rows if r[1] is not None]

    def level_snapshot(self, periods: Sequence[tuple[str, str]]) -> tuple[int, list[LevelRow]]:
        """The level_balances rows of these (tenant, period)s, their tenant's, teams' and
        keys', and the last sequence they include (one statement: one snapshot)."""
        rows = self.conn.execute(
            "WITH w AS (SELECT coalesce(max(seq), 0) AS seq FROM ledger_events), "
            "c AS (SELECT * FROM unnest(%s::text[], %s::text[]) AS c(tenant_id, period)), "
            "l AS (SELECT tenant_id, period, 'tenant' AS scope, tenant_id AS level_id FROM c "
            "UNION ALL SELECT c.tenant_id, c.period, 'team', c.tenant_id || '/' || t.team_id "
            "FROM c JOIN teams t USING (tenant_id) "
            "UNION ALL SELECT c.tenant_id, c.period, 'key', k.key_id "
            "FROM c JOIN api_keys k USING (tenant_id)) "
            "SELECT w.seq, x.* FROM w LEFT JOIN LATERAL (SELECT l.tenant_id, b.scope, "
            "b.level_id, b.period, b.reserved_tokens, b.spent_tokens, b.reserved_usd, "
            "b.spent_usd FROM l JOIN level_balances b USING (scope, level_id, period)) x ON true",
            ([t for t, _ in periods], [p for _, p in periods])).fetchall()
        return int(rows[0][0]), [LevelRow(r[1], LevelScope(r[2]), r[3], r[4],
                                          LevelBalance(*r[5:])) for r in rows if r[1] is not None]

    # -- internals --------------------------------------------------------------------

    def _call(self, function: str, *args: Any) -> list[Outcome]:
        if isinstance(args[0], list) and not args[0]:
            return []
        sql = f"SELECT {OUTCOME_COLUMNS} FROM {function} ORDER BY ord"

        def run() -> list[Outcome]:
            if self.conn.autocommit:
                rows = self.conn.execute(sql, args, binary=True).fetchall()
            else:
                with self.conn.transaction():
                    rows = self.conn.execute(sql, args, binary=True).fetchall()
            return [tuple.__new__(Outcome, (r[0], r[1], _KINDS(r[2]), *r[3:])) for r in rows]

        return self._retrying(run)

    def _retrying(self, fn: Callable[[], T]) -> T:
        for attempt in range(8):
            try:
                return fn()
            except _RETRYABLE as exc:
                # Two batches raced on a request id, or a deadlock with an outside writer.
                log.info("ledger transaction retried after %s", type(exc).__name__)
                time.sleep(0.005 * (attempt + 1))
        return fn()
