"""Replay the ledger into per-tenant statements, check its invariants, and compare the replay
with the balances snapshot and the Redis projection (the request records: `audit_records`).

Deterministic: the same ledger gives byte-identical output (sorted, no wall-clock values)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg

from quotaflow.ledger.domain import Balance, Kind
from quotaflow.ledger.projection import RedisProjection
from quotaflow.tables import aligned, csv_text

Key = tuple[str, str]  # (tenant, period)
# The kinds the replay compares every event with, read off the enum once: on Python 3.11 a
# member read off its class costs as much as ten string comparisons.
_GRANTED, _RESERVED, _SETTLED, _RELEASED, _REJECTED = (
    Kind.QUOTA_GRANTED, Kind.TOKENS_RESERVED, Kind.RESERVATION_SETTLED,
    Kind.RESERVATION_RELEASED, Kind.REQUEST_REJECTED)


@dataclass
class Statement:
    """What a tenant's period came to, replayed from the ledger."""

    tenant: str
    period: str
    granted: int = 0
    reserved: int = 0  # tokens ever reserved
    settled: int = 0  # reservations settled
    released: int = 0  # tokens returned: released reservations and settlement remainders
    expired: int = 0  # tokens of expired reservations
    charged: int = 0
    rejected: int = 0  # requests refused
    open: int = 0  # tokens still held by open reservations

    @property
    def remaining(self) -> int:
        return self.granted - self.open - self.charged

    def balance(self) -> Balance:
        return Balance(self.granted, self.open, self.charged)

    def row(self) -> dict[str, Any]:
        return {**asdict(self), "remaining": self.remaining}


@dataclass
class Reservation:
    key: Key
    amount: int
    ended: str | None = None


@dataclass
class Audit:
    """The replay's statements and every difference found."""

    statements: dict[Key, Statement] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)
    reservations: dict[str, Reservation] = field(default_factory=dict)
    events: int = 0

    @property
    def ok(self) -> bool:
        return not self.findings


def _stream(conn: psycopg.Connection[Any], tenant: str | None, period: str | None,
            batch: int = 50_000) -> Iterator[tuple[Any, ...]]:
    filters = [(column, v) for column, v in (("tenant_id", tenant), ("period", period)) if v]
    where = " AND ".join(f"{column} = %s" for column, _ in filters)
    sql = ("SELECT seq, tenant_id, stream_version, kind, request_id, period, amount, released "
           "FROM ledger_events" + (f" WHERE {where}" if where else "") + " ORDER BY seq")
    with conn.transaction(), conn.cursor(name="quotaflow_audit") as cur:
        cur.itersize = batch
        cur.execute(sql, [v for _, v in filters])
        yield from cur


def replay(conn: psycopg.Connection[Any], tenant: str | None = None, period: str | None = None,
           progress: Callable[[int, int], None] | None = None) -> Audit:
    """Replay the ledger in sequence order into statements, checking its invariants."""
    count = conn.execute("SELECT count(*) FROM ledger_events").fetchone() if progress else None
    total = int(count[0]) if count else 0
    audit = Audit()
    st = audit.statements
    find = audit.findings.append
    versions: dict[str, int] = {}
    reservations = audit.reservations
    n = 0
    for seq, t, version, kind, request_id, p, amount, released in _stream(conn, tenant, period):
        n += 1
        if progress and n % 100_000 == 0:
            progress(n, total)
        key = (t, p)
        s = st.get(key)
        if s is None:
            s = st[key] = Statement(t, p)
        last = versions.get(t, 0)
        if period is None and version != last + 1:  # a period filter skips versions
            find(f"{t}: stream version {version} at seq {seq} follows {last}")
        versions[t] = version
        if kind == _GRANTED:
            s.granted += amount
        elif kind == _RESERVED:
            if request_id in reservations:
                find(f"{t}: request {request_id} reserved twice (seq {seq})")
            reservations[request_id] = Reservation(key, amount)
            s.reserved += amount
            s.open += amount
            if s.open + s.charged > s.granted:
                find(f"{t} {p}: overshoot at seq {seq}: open {s.open} + spent {s.charged} > "
                     f"granted {s.granted}")
        elif kind == _REJECTED:
            s.rejected += 1
        else:
            r = reservations.get(request_id)
            if r is None:
                find(f"{t}: {kind} for request {request_id} with no reservation (seq {seq})")
                continue
            if r.ended is not None:
                find(f"{t}: request {request_id} {kind} after {r.ended} (seq {seq})")
                continue
            r.ended = kind
            s = st[r.key]
            ended = amount + released if kind == _SETTLED else amount
            if ended != r.amount:
                find(f"{t}: request {request_id} {kind} ends {ended} of a reservation of "
                     f"{r.amount} (seq {seq})")
            s.open -= ended
            if kind == _SETTLED:
                s.settled += 1
                s.charged += amount
                s.released += released
            elif kind == _RELEASED:
                s.released += amount
            else:
                s.expired += amount
    audit.events = n
    if progress:
        progress(n, total)
    return audit


def compare_snapshot(audit: Audit, conn: psycopg.Connection[Any], tenant: str | None,
                     period: str | None) -> None:
    """Compare the replay with the balances snapshot the decisions read."""
    rows = conn.execute(
        "SELECT tenant_id, period, granted, reserved, spent FROM balances").fetchall()
    seen = set()
    for t, p, granted, reserved, spent in rows:
        if (tenant and t != tenant) or (period and p != period):
            continue
        seen.add((t, p))
        s = audit.statements.get((t, p))
        replayed = s.balance() if s else Balance()
        if replayed != Balance(granted, reserved, spent):
            audit.findings.append(f"{t} {p}: balances table {Balance(granted, reserved, spent)} "
                                  f"!= replay {replayed}")
    for key in sorted(set(audit.statements) - seen):
        audit.findings.append(f"{key[0]} {key[1]}: no balances row for a replayed period")


def compare_projection(audit: Audit, projection: RedisProjection, tenant: str | None,
                       period: str | None) -> None:
    """Compare the replay with the projection's balances."""
    projected = projection.balances()
    for (t, p), b in sorted(projected.items()):
        if (tenant and t != tenant) or (period and p != period):
            continue
        s = audit.statements.get((t, p))
        replayed = s.balance() if s else Balance()
        if b != replayed:
            audit.findings.append(f"{t} {p}: Redis projection {b} != replay {replayed}")
    for key, s in sorted(audit.statements.items()):
        if key not in projected and s.balance() != Balance():
            audit.findings.append(f"{key[0]} {key[1]}: missing from the Redis projection")


def render(audit: Audit, fmt: str) -> str:
    """The statements and differences as a table, JSON or CSV."""
    rows = [s.row() for _, s in sorted(audit.statements.items())]
    columns = ["tenant", "period", "granted", "reserved", "settled", "released", "expired",
               "charged", "rejected", "open", "remaining"]
    if fmt == "json":
        return json.dumps({"events": audit.events, "statements": rows,
                           "findings": audit.findings, "ok": audit.ok},
                          indent=2, sort_keys=True) + "\n"
    if fmt == "csv":
        return csv_text(rows, columns)
    lines = aligned(columns, [[str(r[c]) for c in columns] for r in rows])
    lines.append(f"\n{audit.events} ledger events, {len(rows)} statements, "
                 f"{len(audit.findings)} differences")
    lines += [f"DIFFERENCE: {f}" for f in audit.findings]
    return "\n".join(lines) + "\n"


def progress_printer() -> Callable[[int, int], None]:
    tty = sys.stderr.isatty()

    def show(done: int, total: int) -> None:
        share = done / total if total else 1.0
        if tty:
            bar = "#" * int(share * 40)
            print(f"\rreplaying [{bar:<40}] {done:,}/{total:,}", end="", file=sys.stderr,
                  flush=True)
            if done >= total:
                print(file=sys.stderr)
        elif done % 500_000 == 0 or done >= total:
            print(f"replayed {done:,}/{total:,} ledger events", file=sys.stderr, flush=True)

    return show
