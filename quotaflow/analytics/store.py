"""Where the roll-ups live: the `UsageStore` port and its PostgreSQL adapter
(infra/migrations/0005_usage_rollups.sql). One batch is one transaction: the bucket deltas,
the ledger versions and outcomes applied, and the consumer's next offsets commit together or
not at all, so a batch is never half applied and never applied twice."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

import psycopg

from quotaflow.analytics.query import Key, UsageQuery, rows
from quotaflow.analytics.rollup import (
    COLUMNS,
    Applied,
    Attribution,
    Batch,
    Bucket,
    Counts,
    Position,
    fold_ledger,
    fold_outcomes,
    merge,
)
from quotaflow.events.payloads import LedgerEntry
from quotaflow.events.status import LedgerKind, OutcomeKind

Conn = psycopg.Connection[Any]
LEDGER_ENTRY_COLUMNS = ("e.seq, e.tenant_id, e.stream_version, e.kind, e.request_id, e.period, "
                        "e.amount, e.released, e.recorded_at, e.key_id, e.team_id, e.usd, "
                        "e.usd_released, e.model, e.price_version, e.input_tokens")


# Which model and key each request was for, read by key; never prepared, so that a plan cached
# while `requests` was small never scans it (quotaflow.adapters.request_store `_BY_KEYS`).
REQUESTS_BY_ID = "SELECT request_id, model, key_id FROM requests WHERE request_id = ANY(%s)"

class UsageReader(Protocol):
    """Reads usage rows (what `GET /v1/usage` needs)."""

    def usage(self, query: UsageQuery) -> list[dict[str, Any]]:
        """The query's rows, ordered by tenant, start and group."""
        ...


class UsageStore(UsageReader, Protocol):
    """The roll-ups with the consumer's position in the topics, applied exactly once."""

    def offsets(self, consumer: str, positions: Sequence[Position]) -> dict[Position, int]:
        """The stored next offsets of `consumer` for those topic partitions it has any for."""
        ...

    def apply(self, batch: Batch) -> Applied:
        """Roll up what the batch has not applied before and store its next offsets, atomically."""
        ...

    def reset(self) -> None:
        """Forget every roll-up, version, outcome and offset (the next run rebuilds)."""
        ...


_SUMS = ", ".join(f"sum({c})" for c in COLUMNS)
_UPSERT = (
    f"INSERT INTO usage_rollups (tenant_id, minute, model, key_id, {', '.join(COLUMNS)}) "
    "SELECT * FROM unnest(%s::text[], %s::timestamptz[], %s::text[], %s::text[], "
    + ", ".join("%s::float8[]" if c == "latency_ms" else "%s::bigint[]" for c in COLUMNS)
    + ") ON CONFLICT (tenant_id, minute, model, key_id) DO UPDATE SET "
    + ", ".join(f"{c} = usage_rollups.{c} + EXCLUDED.{c}" for c in COLUMNS))


class PostgresUsageStore:
    """The `UsageStore` on PostgreSQL. Given a connection provider (such as the door's
    per-thread connections), each call uses the connection it answers."""

    def __init__(self, conn: Conn | Callable[[], Conn]) -> None:
        self._connection: Callable[[], Conn] = conn if callable(conn) else (lambda: conn)
        self._close: Callable[[], None] = getattr(conn, "close", lambda: None)

    @classmethod
    def connect(cls, url: str) -> PostgresUsageStore:
        """A store on its own autocommit connection to `url`."""
        return cls(psycopg.connect(url, autocommit=True))

    @property
    def conn(self) -> Conn:
        """The connection the next statement runs on."""
        return self._connection()

    def close(self) -> None:
        """Close the connection (or the provider's)."""
        self._close()

    def offsets(self, consumer: str, positions: Sequence[Position]) -> dict[Position, int]:
        """The stored next offsets of `consumer` for those topic partitions it has any for."""
        found = self.conn.execute(
            "SELECT topic, partition, next_offset FROM usage_offsets WHERE consumer = %s",
            (consumer,)).fetchall()
        wanted = set(positions)
        return {(t, p): int(o) for t, p, o in found if (t, p) in wanted}

    def apply(self, batch: Batch) -> Applied:
        """Roll up what the batch has not applied before and store its next offsets, in one
        transaction. Tenants' version rows are locked in name order, so two consumers that
        briefly share a partition during a rebalance serialize instead of double counting."""
        conn = self.conn
        with conn.transaction():
            versions = self._lock_versions(conn, sorted({e.tenant for e in batch.ledger}))
            ledger = self._with_gaps_filled(conn, batch.ledger, versions)
            attribution = self._attribution(
                conn, batch.request_ids() | {e.request_id for e in ledger if e.request_id})
            fresh: set[tuple[str, OutcomeKind]] = set()
            if batch.outcomes:
                fresh = {(r, OutcomeKind(k)) for r, k in conn.execute(
                    "INSERT INTO usage_outcomes (request_id, kind) SELECT * FROM "
                    "unnest(%s::text[], %s::text[]) ON CONFLICT DO NOTHING "
                    "RETURNING request_id, kind",
                    ([o.request_id for o in batch.outcomes],
                     [o.kind for o in batch.outcomes])).fetchall()}
            before = dict(versions)
            deltas, dup_ledger = fold_ledger(ledger, versions, attribution)
            outcome_deltas, dup_outcomes = fold_outcomes(batch.outcomes, fresh, attribution)
            merge(deltas, outcome_deltas)
            self._upsert(conn, deltas)
            moved = sorted((t, v) for t, v in versions.items() if before.get(t) != v)
            if moved:
                conn.execute("UPDATE usage_streams s SET version = v.version FROM unnest("
                             "%s::text[], %s::bigint[]) AS v(tenant_id, version) "
                             "WHERE s.tenant_id = v.tenant_id",
                             ([t for t, _ in moved], [v for _, v in moved]))
            if batch.next_offsets:
                offsets = sorted(batch.next_offsets.items())
                conn.execute(
                    "INSERT INTO usage_offsets (consumer, topic, partition, next_offset) "
                    "SELECT %s, * FROM unnest(%s::text[], %s::int[], %s::bigint[]) "
                    "ON CONFLICT (consumer, topic, partition) DO UPDATE SET next_offset = "
                    "GREATEST(usage_offsets.next_offset, EXCLUDED.next_offset)",
                    (batch.consumer, [t for (t, _), _ in offsets],
                     [p for (_, p), _ in offsets], [o for _, o in offsets]))
        return Applied(ledger=len(ledger) - dup_ledger,
                       outcomes=len(batch.outcomes) - dup_outcomes,
                       duplicates=dup_ledger + dup_outcomes)

    def usage(self, query: UsageQuery) -> list[dict[str, Any]]:
        """The query's rows, summed by PostgreSQL."""
        # A key's team is the one it was created in (keys do not change team).
        group = {"model": "r.model", "key": "r.key_id", "team": "coalesce(k.team_id, '')"
                 }.get(query.group or "", "''")
        where: list[str] = []
        params: list[Any] = [query.by]
        for cond, value in (("r.tenant_id = %s", query.tenant), ("r.minute >= %s", query.start),
                            ("r.minute < %s", query.end)):
            if value is not None:
                where.append(cond)
                params.append(value)
        found = self.conn.execute(
            f"SELECT r.tenant_id, date_trunc(%s, r.minute, 'UTC'), {group}, {_SUMS} "
            "FROM usage_rollups r"
            + (" LEFT JOIN api_keys k ON k.key_id = r.key_id" if query.group == "team" else "")
            + (" WHERE " + " AND ".join(where) if where else "")
            + " GROUP BY 1, 2, 3", params).fetchall()
        summed: dict[Key, Counts] = {
            (r[0], r[1], r[2]): Counts.of(r[3:])
            for r in found}
        return rows(query, summed)

    def reset(self) -> None:
        """Forget every roll-up, version, outcome and offset, in one transaction."""
        with self.conn.transaction():
            self.conn.execute("TRUNCATE usage_rollups, usage_offsets, usage_streams, "
                              "usage_outcomes")

    @staticmethod
    def _with_gaps_filled(conn: Conn, entries: Sequence[LedgerEntry],
                          versions: dict[str, int]) -> list[LedgerEntry]:
        """The batch's ledger entries, with any a tenant's stream skips read from the ledger.

        The ledger topic is at least once, not complete: a broker that loses its data (the
        local one keeps nothing across a restart) loses events the relay already published.
        Stream versions have no holes, so a hole between the last version rolled up and this
        batch's is such a loss; PostgreSQL, the system of record, fills it in the same
        transaction, so the roll-ups stay equal to the ledger."""
        seen: dict[str, set[int]] = {}
        for e in entries:
            seen.setdefault(e.tenant, set()).add(e.stream_version)
        holes = [(tenant, low, top) for tenant, got in seen.items()
                 for low, top in [(versions.get(tenant, 0), max(got))]
                 if top > low and len({v for v in got if v > low}) != top - low]
        if not holes:
            return list(entries)
        rows = conn.execute(
            f"SELECT {LEDGER_ENTRY_COLUMNS} FROM unnest(%s::text[], %s::bigint[], "
            "%s::bigint[]) AS w(tenant, lo, hi) JOIN ledger_events e ON e.tenant_id = w.tenant "
            "AND e.stream_version > w.lo AND e.stream_version <= w.hi "
            "ORDER BY e.tenant_id, e.stream_version",
            ([h[0] for h in holes], [h[1] for h in holes], [h[2] for h in holes])).fetchall()
        filled = {tenant for tenant, _, _ in holes}
        return [*(e for e in entries if e.tenant not in filled),
                *(LedgerEntry(row[0], row[1], row[2], LedgerKind(row[3]), *row[4:])
                  for row in rows)]

    @staticmethod
    def _lock_versions(conn: Conn, tenants: list[str]) -> dict[str, int]:
        if not tenants:
            return {}
        conn.execute("INSERT INTO usage_streams (tenant_id, version) SELECT unnest(%s::text[]),"
                     " 0 ON CONFLICT DO NOTHING", (tenants,))
        return {t: int(v) for t, v in conn.execute(
            "SELECT tenant_id, version FROM usage_streams WHERE tenant_id = ANY(%s) "
            "ORDER BY tenant_id FOR UPDATE", (tenants,)).fetchall()}

    @staticmethod
    def _attribution(conn: Conn, request_ids: set[str]) -> Attribution:
        if not request_ids:
            return {}
        return {r: (m, k) for r, m, k in conn.execute(
            REQUESTS_BY_ID, (list(request_ids),), prepare=False).fetchall()}

    @staticmethod
    def _upsert(conn: Conn, deltas: dict[Bucket, Counts]) -> None:
        if not deltas:
            return
        ordered: list[tuple[Bucket, Counts]] = sorted(deltas.items(), key=_order)
        columns: list[list[Any]] = [[b[0] for b, _ in ordered], [b[3] for b, _ in ordered],
                                    [b[1] for b, _ in ordered], [b[2] for b, _ in ordered]]
        columns += [[getattr(c, name) for _, c in ordered] for name in COLUMNS]
        conn.execute(_UPSERT, columns)


def _order(item: tuple[Bucket, Counts]) -> tuple[str, datetime, str, str]:
    """Rows in primary-key order, so concurrent upserts lock them in the same order."""
    (tenant, model, key_id, minute), _ = item
    return tenant, minute, model, key_id
