"""The ledger's PostgreSQL event store.

Each call decides a batch of commands in ONE transaction (group commit), in this order:
  1. lock the tenants' stream rows (sorted, so concurrent batches cannot deadlock): this
     serializes decisions per tenant, which is what makes the quota exact under concurrency;
  2. look up idempotency records: a redelivered command returns its first outcome unchanged;
  3. decide with the pure rules in `domain`;
  4. lock the ledger table, then append: commits happen in sequence order, so a reader that
     tails `seq > last` never skips an event whose transaction commits late;
  5. update the decision snapshot, the reservations and the idempotency records.
The caller commits Kafka offsets only after this returns.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors

from events.ledger import domain
from events.ledger.domain import Balance, Kind, LedgerEvent, Reservation

log = logging.getLogger(__name__)
T = TypeVar("T")
Conn = psycopg.Connection[Any]


@dataclass(frozen=True)
class ReserveTokens:
    tenant: str
    request_id: str
    amount: int
    payload_hash: str


@dataclass(frozen=True)
class SettleReservation:
    tenant: str
    request_id: str
    actual_tokens: int
    payload_hash: str


@dataclass(frozen=True)
class ReleaseReservation:
    tenant: str
    request_id: str
    reason: str
    payload_hash: str


EndCommand = SettleReservation | ReleaseReservation


@dataclass(frozen=True)
class Outcome:
    """What a command did. `kind` is the event appended, or None when the command was refused
    (then `reason` says why). A redelivered command gets its first outcome back."""

    request_id: str
    tenant: str
    kind: str | None
    period: str
    amount: int
    released: int = 0
    seq: int = 0
    reason: str | None = None
    reserved: int = 0  # the reservation's size, for endings

    @property
    def accepted(self) -> bool:
        return self.kind is not None and self.kind != Kind.REQUEST_REJECTED

    def to_json(self) -> str:
        return json.dumps({f.name: getattr(self, f.name) for f in fields(self)}, sort_keys=True)

    @classmethod
    def from_json(cls, raw: Any) -> Outcome:
        return cls(**(raw if isinstance(raw, dict) else json.loads(raw)))


@dataclass(frozen=True)
class StoredEvent:
    seq: int
    tenant: str
    stream_version: int
    kind: Kind
    request_id: str | None
    period: str
    amount: int
    released: int
    reason: str | None
    recorded_at: datetime

    def as_event(self) -> LedgerEvent:
        return LedgerEvent(self.kind, self.tenant, self.period, self.amount, self.request_id,
                           self.released, self.reason)


class IdempotencyConflict(Exception):
    """The same request id came with a different payload."""


_RETRYABLE = (pg_errors.UniqueViolation, pg_errors.DeadlockDetected,
              pg_errors.SerializationFailure)

EVENT_COLUMNS = ("seq, tenant_id, stream_version, kind, request_id, period, amount, released, "
                 "reason, recorded_at")


def row_to_event(row: Sequence[Any]) -> StoredEvent:
    return StoredEvent(row[0], row[1], row[2], Kind(row[3]), row[4], row[5], row[6], row[7],
                       row[8], row[9])


class PostgresLedger:
    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    @classmethod
    def connect(cls, url: str) -> PostgresLedger:
        return cls(psycopg.connect(url, autocommit=True))

    def close(self) -> None:
        self.conn.close()

    # -- commands ---------------------------------------------------------------------

    def reserve(self, commands: Sequence[ReserveTokens]) -> list[Outcome]:
        return self._retrying(lambda: self._batch(commands, "reserve", self._decide_reserve))

    def end(self, commands: Sequence[EndCommand]) -> list[Outcome]:
        """Settle or release reservations (the settle step)."""
        return self._retrying(lambda: self._batch(commands, "end", self._decide_end))

    def expire_stale(self, ttl_s: int, limit: int = 1000) -> list[Outcome]:
        """Expire reservations older than `ttl_s` by the ledger's own clock."""
        return self._retrying(lambda: self._expire(ttl_s, limit))

    def grant(self, tenant: str, tokens: int, period: str | None = None) -> Outcome:
        def run() -> Outcome:
            with self.conn.transaction():
                tx = _Tx(self.conn, [tenant])
                p = period or tx.current_period(tenant)
                ev = LedgerEvent(Kind.QUOTA_GRANTED, tenant, p, tokens)
                tx.emit(ev)
                (seq,) = tx.allocate()
                tx.write()
                return Outcome("", tenant, ev.kind.value, p, tokens, seq=seq)

        return self._retrying(run)

    # -- reads ------------------------------------------------------------------------

    def balance(self, tenant: str, period: str) -> Balance:
        row = self.conn.execute(
            "SELECT granted, reserved, spent FROM balances WHERE tenant_id=%s AND period=%s",
            (tenant, period)).fetchone()
        return Balance(*row) if row else Balance()

    def current_period(self, tenant: str) -> str:
        row = self.conn.execute(
            "SELECT plan_period, now() FROM tenants WHERE tenant_id = %s", (tenant,)).fetchone()
        if row is None:
            raise LookupError(f"unknown tenant {tenant!r}")
        return domain.period_of(row[0], row[1])

    def events_after(self, seq: int, limit: int = 10_000) -> list[StoredEvent]:
        rows = self.conn.execute(
            f"SELECT {EVENT_COLUMNS} FROM ledger_events WHERE seq > %s ORDER BY seq LIMIT %s",
            (seq, limit)).fetchall()
        return [row_to_event(r) for r in rows]

    # -- internals --------------------------------------------------------------------

    def _retrying(self, fn: Callable[[], T]) -> T:
        for attempt in range(8):
            try:
                return fn()
            except _RETRYABLE as exc:
                log.info("ledger transaction retried after %s", type(exc).__name__)
                time.sleep(0.005 * (attempt + 1))
        return fn()

    def _batch(self, commands: Sequence[Any], command: str,
               decide: Callable[[_Tx, Any], LedgerEvent | Outcome]) -> list[Outcome]:
        if not commands:
            return []
        # BEGIN travels in open's pipeline and COMMIT in write's: two round trips a batch.
        try:
            return self._decide_batch(commands, command, decide)
        except BaseException:
            if self.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                self.conn.execute("ROLLBACK")
            raise

    def _decide_batch(self, commands: Sequence[Any], command: str,
                      decide: Callable[[_Tx, Any], LedgerEvent | Outcome]) -> list[Outcome]:
        tx, stored = _Tx.open(self.conn, sorted({c.tenant for c in commands}),
                              [c.request_id for c in commands], command)
        results: list[Outcome | int] = []  # an Outcome, or the index of an appended event
        decided: dict[str, tuple[str, Outcome | int]] = {}
        for c in commands:
            seen = decided.get(c.request_id) or (
                (stored[c.request_id][0], Outcome.from_json(stored[c.request_id][1]))
                if c.request_id in stored else None)
            if seen is not None:
                if seen[0] != c.payload_hash:
                    results.append(_conflict(c))
                else:
                    results.append(seen[1])
                continue
            verdict = decide(tx, c)
            slot: Outcome | int = verdict if isinstance(verdict, Outcome) else tx.emit(verdict)
            decided[c.request_id] = (c.payload_hash, slot)
            results.append(slot)
        seqs = tx.allocate()
        out = [r if isinstance(r, Outcome) else tx.outcome(r, seqs[r]) for r in results]
        for request_id, (payload_hash, slot) in decided.items():
            o = slot if isinstance(slot, Outcome) else tx.outcome(slot, seqs[slot])
            tx.remember(request_id, command, payload_hash, o)
        tx.write(commit=True)
        return out

    def _decide_reserve(self, tx: _Tx, c: ReserveTokens) -> LedgerEvent | Outcome:
        if not tx.known(c.tenant):
            return Outcome(c.request_id, c.tenant, None, "", c.amount, reason="unknown_tenant")
        period = tx.current_period(c.tenant)
        tx.ensure_granted(c.tenant, period)
        return domain.decide_reserve(tx.balance(c.tenant, period), c.tenant, period,
                                     c.request_id, c.amount)

    def _decide_end(self, tx: _Tx, c: EndCommand) -> LedgerEvent | Outcome:
        r = tx.reservation(c.request_id)
        if r is None or r.tenant != c.tenant:
            return Outcome(c.request_id, c.tenant, None, "", 0, reason="unknown_reservation")
        if r.ended is not None:
            # Only an expiry ends a reservation without an idempotency record: a late
            # settlement is refused, and remembered so a redelivery is refused the same way.
            return Outcome(c.request_id, c.tenant, None, r.period, 0, reason="reservation_expired"
                           if r.ended is Kind.RESERVATION_EXPIRED else "already_ended",
                           reserved=r.amount)
        if isinstance(c, SettleReservation):
            return domain.decide_settle(r, c.actual_tokens)
        return domain.decide_release(r, c.reason)

    def _expire(self, ttl_s: int, limit: int) -> list[Outcome]:
        with self.conn.transaction():
            rows = self.conn.execute(
                "SELECT DISTINCT tenant_id FROM reservations WHERE ended IS NULL "
                "AND reserved_at < now() - make_interval(secs => %s)", (ttl_s,)).fetchall()
            if not rows:
                return []
            tx = _Tx(self.conn, sorted(r[0] for r in rows))
            stale = self.conn.execute(
                "SELECT request_id FROM reservations WHERE ended IS NULL "
                "AND reserved_at < now() - make_interval(secs => %s) "
                "AND tenant_id = ANY(%s) ORDER BY reserved_at LIMIT %s",
                (ttl_s, tx.tenants, limit)).fetchall()
            tx.prefetch_reservations([r[0] for r in stale])
            idx = []
            for (request_id,) in stale:
                r = tx.reservation(request_id)
                if r is not None and r.ended is None:
                    idx.append(tx.emit(domain.decide_expire(r)))
            seqs = tx.allocate()
            tx.write()
            return [tx.outcome(i, seqs[i]) for i in idx]


def _conflict(c: Any) -> Outcome:
    return Outcome(c.request_id, c.tenant, None, "", 0,
                   reason="idempotency_conflict: same request id, different payload")


class _Tx:
    """State loaded and written inside one ledger transaction: a few set-based statements
    per batch, whatever its size."""

    STREAMS_SQL = ("SELECT s.tenant_id, s.version, t.plan_period, t.grant_tokens, now() "
                   "FROM ledger_streams s JOIN tenants t USING (tenant_id) "
                   "WHERE s.tenant_id = ANY(%s) ORDER BY s.tenant_id FOR UPDATE OF s")

    def __init__(self, conn: Conn, tenants: Iterable[str],
                 stream_rows: list[Any] | None = None) -> None:
        self.conn = conn
        self.tenants = list(tenants)
        self.seqs: list[int] = []
        self.drawn = False
        rows = stream_rows if stream_rows is not None else conn.execute(
            self.STREAMS_SQL, (self.tenants,), binary=True).fetchall()
        self.versions = {r[0]: r[1] for r in rows}
        self.start_versions = dict(self.versions)
        self.plans = {r[0]: (r[2], r[3]) for r in rows}
        self.now: datetime | None = rows[0][4] if rows else None
        self.balances: dict[tuple[str, str], Balance] = {}
        self.stored_keys: set[tuple[str, str]] = set()  # balances rows that exist
        self.touched: set[tuple[str, str]] = set()
        self.reservations: dict[str, Reservation | None] = {}
        self.events: list[LedgerEvent] = []
        self.commands: list[tuple[str, str, str, str]] = []

    @classmethod
    def open(cls, conn: Conn, tenants: list[str], request_ids: list[str], command: str
             ) -> tuple[_Tx, dict[str, tuple[str, Any]]]:
        """Lock, draw sequence numbers and read everything the batch's decisions need, in one
        round trip. Locks in a fixed order (tenant streams sorted, then the ledger table), so
        concurrent batches cannot deadlock; the table lock is taken before any sequence
        number is drawn, so commits happen in sequence order for readers that tail."""
        # At most one event per command, plus a period's first grant per tenant.
        draw = len(request_ids) + (len(tenants) if command == "reserve" else 0)
        with conn.pipeline():
            conn.execute("BEGIN")
            streams = conn.execute(cls.STREAMS_SQL, (tenants,), binary=True)
            conn.execute("LOCK TABLE ledger_events IN EXCLUSIVE MODE")
            drawn = conn.execute(
                "SELECT nextval(pg_get_serial_sequence('ledger_events', 'seq')) "
                "FROM generate_series(1, %s)", (draw,))
            stored = conn.execute(
                "SELECT request_id, payload_hash, outcome FROM ledger_commands "
                "WHERE request_id = ANY(%s) AND command = %s", (request_ids, command),
                binary=True)
            found = None if command == "reserve" else conn.execute(
                "SELECT request_id, tenant_id, period, amount, ended FROM reservations "
                "WHERE request_id = ANY(%s)", (request_ids,), binary=True)
            # Both period formats of today: whichever the tenant's plan uses is there.
            balances = conn.execute(
                "SELECT tenant_id, period, granted, reserved, spent FROM balances "
                "WHERE tenant_id = ANY(%s) AND (period = to_char(now(), 'YYYY-MM') "
                "OR period = to_char(now(), 'YYYY-MM-DD') OR (tenant_id, period) IN "
                "(SELECT tenant_id, period FROM reservations WHERE request_id = ANY(%s)))",
                (tenants, request_ids), binary=True)
        tx = cls(conn, tenants, streams.fetchall())
        tx.seqs = sorted(int(r[0]) for r in drawn.fetchall())
        tx.drawn = True
        outcomes = {r[0]: (r[1], r[2]) for r in stored.fetchall()}
        if found is not None:
            tx._keep_reservations(request_ids, found.fetchall())
        for t, p, granted, reserved, spent in balances.fetchall():
            tx.balances[(t, p)] = Balance(granted, reserved, spent)
            tx.stored_keys.add((t, p))
        return tx, outcomes

    def known(self, tenant: str) -> bool:
        return tenant in self.versions

    def current_period(self, tenant: str) -> str:
        assert self.now is not None
        return domain.period_of(self.plans[tenant][0], self.now)

    def prefetch_balances(self, keys: Iterable[tuple[str, str]]) -> None:
        wanted = [k for k in set(keys) if k not in self.balances]
        if not wanted:
            return
        rows = self.conn.execute(
            "SELECT b.tenant_id, b.period, b.granted, b.reserved, b.spent FROM balances b "
            "JOIN unnest(%s::text[], %s::text[]) AS k(tenant_id, period) "
            "USING (tenant_id, period)",
            ([k[0] for k in wanted], [k[1] for k in wanted])).fetchall()
        for t, p, granted, reserved, spent in rows:
            self.balances[(t, p)] = Balance(granted, reserved, spent)
            self.stored_keys.add((t, p))
        for k in wanted:
            self.balances.setdefault(k, Balance())

    def prefetch_reservations(self, request_ids: list[str]) -> None:
        rows = self.conn.execute(
            "SELECT request_id, tenant_id, period, amount, ended FROM reservations "
            "WHERE request_id = ANY(%s)", (request_ids,), binary=True).fetchall()
        self._keep_reservations(request_ids, rows)

    def _keep_reservations(self, request_ids: list[str], rows: list[Any]) -> None:
        for rid in request_ids:
            self.reservations.setdefault(rid, None)
        for rid, t, p, amount, ended in rows:
            self.reservations[rid] = Reservation(t, rid, p, amount,
                                                 Kind(ended) if ended else None)
        self.prefetch_balances((r.tenant, r.period) for r in self.reservations.values() if r)

    def balance(self, tenant: str, period: str) -> Balance:
        key = (tenant, period)
        if key not in self.balances:
            self.prefetch_balances([key])
        return self.balances[key]

    def ensure_granted(self, tenant: str, period: str) -> None:
        """A period's first decision grants the plan's tokens for it (a recurring grant)."""
        key = (tenant, period)
        self.balance(tenant, period)
        if key not in self.stored_keys and key not in self.touched:
            self.emit(LedgerEvent(Kind.QUOTA_GRANTED, tenant, period, self.plans[tenant][1]))

    def reservation(self, request_id: str) -> Reservation | None:
        if request_id not in self.reservations:
            self.prefetch_reservations([request_id])
        return self.reservations[request_id]

    def stored_outcomes(self, request_ids: list[str], command: str) -> dict[str, tuple[str, Any]]:
        rows = self.conn.execute(
            "SELECT request_id, payload_hash, outcome FROM ledger_commands "
            "WHERE request_id = ANY(%s) AND command = %s", (request_ids, command),
            binary=True).fetchall()
        return {r[0]: (r[1], r[2]) for r in rows}

    def emit(self, ev: LedgerEvent) -> int:
        """Queue an event and fold it into this transaction's view; returns its index."""
        key = (ev.tenant, ev.period)
        self.balances[key] = domain.apply(self.balance(*key), ev)
        self.touched.add(key)
        if ev.request_id is not None and ev.kind is Kind.TOKENS_RESERVED:
            self.reservations[ev.request_id] = Reservation(ev.tenant, ev.request_id, ev.period,
                                                           ev.amount)
        elif ev.request_id is not None and ev.kind in domain.ENDINGS:
            r = self.reservation(ev.request_id)
            assert r is not None
            self.reservations[ev.request_id] = Reservation(r.tenant, r.request_id, r.period,
                                                           r.amount, ev.kind)
        self.events.append(ev)
        return len(self.events) - 1

    def outcome(self, index: int, seq: int) -> Outcome:
        ev = self.events[index]
        reserved = ev.amount + ev.released if ev.kind is Kind.RESERVATION_SETTLED else ev.amount
        return Outcome(ev.request_id or "", ev.tenant, ev.kind.value, ev.period, ev.amount,
                       ev.released, seq, ev.reason, reserved)

    def remember(self, request_id: str, command: str, payload_hash: str, o: Outcome) -> None:
        self.commands.append((request_id, command, payload_hash, o.to_json()))

    def allocate(self) -> list[int]:
        """The sequence numbers of the queued events, drawn under the ledger table lock."""
        if self.drawn:
            # Drawn up front by `open`; the unused rest leave gaps, which tailing readers
            # (seq > last) do not mind.
            assert len(self.seqs) >= len(self.events), "drew too few sequence numbers"
            self.seqs = self.seqs[:len(self.events)]
            return self.seqs
        if not self.events:
            self.seqs = []
            return self.seqs
        with self.conn.pipeline():
            # Commit order must equal sequence order for readers that tail the ledger
            # (projection, outbox): take the table lock before the sequence is drawn.
            self.conn.execute("LOCK TABLE ledger_events IN EXCLUSIVE MODE")
            drawn = self.conn.execute(
                "SELECT nextval(pg_get_serial_sequence('ledger_events', 'seq')) "
                "FROM generate_series(1, %s)", (len(self.events),))
        self.seqs = sorted(int(r[0]) for r in drawn.fetchall())
        return self.seqs

    def write(self, commit: bool = False) -> None:
        """Append the events, move the streams, snapshot, reservations and idempotency
        records. They depend on nothing they return: one pipeline, one round trip (with the
        COMMIT when the caller began the transaction by hand)."""
        with self.conn.pipeline():
            moved = self._write(self.seqs, self._next_versions()) if self.events else []
            if self.commands:
                with self.conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO ledger_commands (request_id, command, payload_hash, outcome)"
                        " VALUES (%s, %s, %s, %s)", self.commands)
            if commit:
                # Sent with the writes: if any of them fails, the server skips the COMMIT and
                # the caller rolls back. The stream rows are locked since `open`, and
                # UNIQUE (tenant_id, stream_version) refuses a version appended twice.
                self.conn.execute("COMMIT")
        if not commit and moved and self._streams_updated.rowcount != len(moved):
            raise pg_errors.SerializationFailure("a tenant stream moved under this append")

    def _next_versions(self) -> list[int]:
        versions = []
        for ev in self.events:
            self.versions[ev.tenant] += 1
            versions.append(self.versions[ev.tenant])
        return versions

    def _write(self, seqs: list[int], versions: list[int]) -> list[str]:
        c, evs = self.conn, self.events
        c.execute(
            "INSERT INTO ledger_events (seq, tenant_id, stream_version, kind, request_id, period,"
            " amount, released, reason) SELECT * FROM unnest(%s::bigint[], %s::text[], "
            "%s::bigint[], %s::text[], %s::text[], %s::text[], %s::bigint[], %s::bigint[], "
            "%s::text[])",
            (seqs, [e.tenant for e in evs], versions, [e.kind.value for e in evs],
             [e.request_id for e in evs], [e.period for e in evs], [e.amount for e in evs],
             [e.released for e in evs], [e.reason for e in evs]), binary=True)
        moved = [t for t, v in self.versions.items() if v != self.start_versions[t]]
        self._streams_updated = c.execute(
            "UPDATE ledger_streams s SET version = v.version FROM unnest(%s::text[], "
            "%s::bigint[], %s::bigint[]) AS v(tenant_id, version, old) "
            "WHERE s.tenant_id = v.tenant_id AND s.version = v.old",
            (moved, [self.versions[t] for t in moved], [self.start_versions[t] for t in moved]),
            binary=True)
        keys = sorted(self.touched)
        c.execute(
            "INSERT INTO balances (tenant_id, period, granted, reserved, spent) "
            "SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::bigint[], "
            "%s::bigint[]) ON CONFLICT (tenant_id, period) DO UPDATE SET "
            "granted = EXCLUDED.granted, reserved = EXCLUDED.reserved, spent = EXCLUDED.spent",
            ([k[0] for k in keys], [k[1] for k in keys],
             [self.balances[k].granted for k in keys], [self.balances[k].reserved for k in keys],
             [self.balances[k].spent for k in keys]), binary=True)
        new = [e for e in evs if e.kind is Kind.TOKENS_RESERVED]
        if new:
            c.execute(
                "INSERT INTO reservations (request_id, tenant_id, period, amount, reserved_at) "
                "SELECT r, t, p, a, now() FROM unnest(%s::text[], %s::text[], %s::text[], "
                "%s::bigint[]) AS v(r, t, p, a)",
                ([e.request_id for e in new], [e.tenant for e in new], [e.period for e in new],
                 [e.amount for e in new]), binary=True)
        ended = [e for e in evs if e.kind in domain.ENDINGS]
        if ended:
            c.execute(
                "UPDATE reservations r SET ended = v.kind FROM unnest(%s::text[], %s::text[]) "
                "AS v(request_id, kind) WHERE r.request_id = v.request_id AND r.ended IS NULL",
                ([e.request_id for e in ended], [e.kind.value for e in ended]), binary=True)
        return moved
