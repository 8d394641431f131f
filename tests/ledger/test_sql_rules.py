"""The ledger's SQL functions against `events.ledger.domain`, the pure statement of the rules.

The store decides inside PostgreSQL (infra/migrations/0002_ledger_functions.sql). Here a small
in-memory ledger built only on `domain` runs the same random batches (several tenants, a tenant
in a new period, an unknown tenant, shared and repeated request ids, changed payloads, settles,
releases and expiries) and every outcome and balance must agree."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quotaflow.ledger import audit, domain
from quotaflow.ledger.commands import (
    EndCommand,
    Outcome,
    ReleaseReservation,
    ReserveTokens,
    SettleReservation,
)
from quotaflow.ledger.domain import Balance, Kind, LedgerEvent, Reservation
from quotaflow.ledger.store import PostgresLedger
from tests.ledger.conftest import make_tenant

PLANS = {"a": 250, "b": 300}  # "b" starts a period with no grant yet; "ghost" does not exist
Row = tuple[str, str | None, str, int, int, str | None, int]  # an Outcome less its seq
CONFLICT = "idempotency_conflict: same request id, different payload"


def _row(o: Outcome) -> Row:
    return (o.tenant, o.kind, o.period, o.amount, o.released, o.reason, o.reserved)


def _event_row(ev: LedgerEvent) -> Row:
    reserved = ev.amount + ev.released if ev.kind is Kind.RESERVATION_SETTLED else ev.amount
    return (ev.tenant, ev.kind.value, ev.period, ev.amount, ev.released, ev.reason, reserved)


@dataclass
class DomainLedger:
    """What the store promises, on domain's rules alone: idempotency by request id, a period's
    first decision granting the plan, and reservations that end exactly once."""

    period: str
    balances: dict[str, Balance] = field(default_factory=lambda: {"a": Balance(granted=250)})
    reservations: dict[str, Reservation] = field(default_factory=dict)
    records: dict[tuple[str, str], tuple[str, Row]] = field(default_factory=dict)

    def run(self, command: str, batch: list[Any]) -> list[Row]:
        out: list[Row] = []
        decided: dict[str, tuple[str, Row]] = {}
        for c in batch:
            first = self.records.get((c.request_id, command)) or decided.get(c.request_id)
            if first is not None:
                same = first[0] == c.payload_hash
                out.append(first[1] if same else (c.tenant, None, "", 0, 0, CONFLICT, 0))
                continue
            row = self._reserve(c) if command == "reserve" else self._end(c)
            decided[c.request_id] = (c.payload_hash, row)
            out.append(row)
        self.records.update({(rid, command): v for rid, v in decided.items()})
        return out

    def _emit(self, ev: LedgerEvent) -> Row:
        self.balances[ev.tenant] = domain.apply(self.balances.get(ev.tenant, Balance()), ev)
        return _event_row(ev)

    def _reserve(self, c: ReserveTokens) -> Row:
        if c.tenant not in PLANS:
            return (c.tenant, None, "", c.amount, 0, "unknown_tenant", 0)
        if c.tenant not in self.balances:
            self._emit(LedgerEvent(Kind.QUOTA_GRANTED, c.tenant, self.period, PLANS[c.tenant]))
        ev = domain.decide_reserve(self.balances[c.tenant], c.tenant, self.period,
                                   c.request_id, c.amount)
        if ev.kind is Kind.TOKENS_RESERVED:
            self.reservations[c.request_id] = Reservation(c.tenant, c.request_id, self.period,
                                                          c.amount)
        return self._emit(ev)

    def _end(self, c: EndCommand) -> Row:
        r = self.reservations.get(c.request_id)
        if r is None or r.tenant != c.tenant:
            return (c.tenant, None, "", 0, 0, "unknown_reservation", 0)
        if r.ended is not None:
            why = "reservation_expired" if r.ended is Kind.RESERVATION_EXPIRED else "already_ended"
            return (c.tenant, None, r.period, 0, 0, why, r.amount)
        ev = (domain.decide_settle(r, c.actual_tokens) if isinstance(c, SettleReservation)
              else domain.decide_release(r, c.reason))
        self.reservations[c.request_id] = Reservation(r.tenant, r.request_id, r.period,
                                                      r.amount, ev.kind)
        return self._emit(ev)

    def expire_all(self) -> list[Row]:
        stale = sorted(rid for rid, r in self.reservations.items() if r.ended is None)
        rows = []
        for rid in stale:
            ev = domain.decide_expire(self.reservations[rid])
            self.reservations[rid] = Reservation(ev.tenant, rid, ev.period, ev.amount, ev.kind)
            rows.append(self._emit(ev))
        return rows


tenants = st.sampled_from(["a", "a", "b", "ghost"])
# Amounts that fill a grant exactly (250 = 2 x 125 = 5 x 50) as well as any others.
amounts = st.one_of(st.sampled_from([-1, 0, 50, 125]), st.integers(1, 120))
actuals = st.one_of(st.sampled_from([-3, 0]), st.integers(1, 150))
changed = st.sampled_from([False] * 9 + [True])  # a redelivery with another payload


@st.composite
def scenarios(draw: st.DrawFn) -> list[tuple[str, list[Any]]]:
    """Batches over a few request ids, each with its own tenant, size and actual use, so that
    the same id comes back as a redelivery; now and then with a changed payload."""
    spec = {f"r{i}": (draw(tenants), draw(amounts), draw(actuals)) for i in range(8)}
    ids = st.sampled_from(sorted(spec))

    def reserve(rid: str, other: bool) -> ReserveTokens:
        t, n, _ = spec[rid]
        return ReserveTokens(t, rid, n + other, f"{t}:{n + other}")

    def end(rid: str, other: bool, settle: bool) -> EndCommand:
        t, _, actual = spec[rid]
        t = "ghost" if other and settle else t  # not the reservation's tenant
        if settle:
            return SettleReservation(t, rid, actual, f"s:{t}:{actual}")
        return ReleaseReservation(t, rid, "failed" if not other else "timeout",
                                  f"x:{t}:{other}")

    reserves = st.lists(st.builds(reserve, ids, changed), min_size=1, max_size=8)
    ends = st.lists(st.builds(end, ids, changed, st.booleans()), min_size=1, max_size=8)
    later = st.one_of(st.tuples(st.just("end"), ends), st.tuples(st.just("reserve"), reserves),
                      st.tuples(st.just("end"), ends), st.tuples(st.just("expire"), st.just([])))
    return [("reserve", draw(reserves)), *draw(st.lists(later, max_size=9))]


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=scenarios())
def test_sql_ledger_decides_every_batch_as_the_domain_rules_do(
        conn: psycopg.Connection[Any], steps: list[tuple[str, list[Any]]]) -> None:
    conn.execute("TRUNCATE tenants, api_keys, ledger_streams, ledger_events, reservations, "
                 "balances, ledger_commands CASCADE")
    make_tenant(conn, "a", PLANS["a"])
    conn.execute("INSERT INTO tenants (tenant_id, plan_period, grant_tokens, rate_limit_per_min)"
                 " VALUES ('b', 'month', %s, 600)", (PLANS["b"],))
    conn.execute("INSERT INTO ledger_streams (tenant_id) VALUES ('b')")
    ledger = PostgresLedger(conn)
    period = ledger.current_period("a")
    reference = DomainLedger(period)
    for command, batch in steps:
        if command == "expire":
            conn.execute("UPDATE reservations SET reserved_at = now() - interval '1 hour'")
            outcomes = sorted(ledger.expire_stale(ttl_s=600), key=lambda o: o.request_id)
            assert [_row(o) for o in outcomes] == reference.expire_all()
            continue
        outcomes = ledger.reserve(batch) if command == "reserve" else ledger.end(batch)
        assert [_row(o) for o in outcomes] == reference.run(command, batch), (command, batch)
        assert [o.request_id for o in outcomes] == [c.request_id for c in batch]
        # An outcome with an event names it by its sequence number.
        named = {o.seq: (o.request_id, o.kind) for o in outcomes if o.kind}
        stored = conn.execute("SELECT seq, request_id, kind FROM ledger_events "
                              "WHERE seq = ANY(%s)", (list(named),)).fetchall()
        assert {seq: (rid, kind) for seq, rid, kind in stored} == named
        for tenant in PLANS:
            assert ledger.balance(tenant, period) == reference.balances.get(tenant, Balance())
    # The events themselves: stream versions follow the sequence, nothing ends twice, and the
    # balances snapshot equals their replay.
    replayed = audit.replay(conn)
    audit.compare_snapshot(replayed, conn, None, None)
    assert replayed.findings == []
