"""The ledger's SQL functions against `MemoryLedger`, the in-memory ledger built only on
`quotaflow.ledger.domain`, the pure statement of the rules.

The store decides inside PostgreSQL (infra/migrations/0002_ledger_functions.sql). Here the
in-memory ledger runs the same random batches (several tenants, a tenant in a new period, an
unknown tenant, shared and repeated request ids, changed payloads, settles, releases and
expiries) and every outcome and balance must agree."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quotaflow.adapters.clock import FixedClock
from quotaflow.adapters.memory.ledger import MemoryLedger
from quotaflow.ledger import audit
from quotaflow.ledger.commands import (
    EndCommand,
    Outcome,
    ReleaseReservation,
    ReserveTokens,
    SettleReservation,
)
from quotaflow.ledger.store import PostgresLedger
from tests.ledger.conftest import make_tenant

PLANS = {"a": 250, "b": 300}  # "b" starts a period with no grant yet; "ghost" does not exist
Row = tuple[str, str | None, str, int, int, str | None, int]  # an Outcome less its seq


def _row(o: Outcome) -> Row:
    return (o.tenant, o.kind, o.period, o.amount, o.released, o.reason, o.reserved)


def reference_ledger(period: str) -> tuple[MemoryLedger, FixedClock]:
    """The in-memory ledger in `period`: "a" granted its plan now, "b" only in an earlier
    period, so that its first decision in this one grants the plan."""
    now = datetime.now(UTC)
    clock = FixedClock(now)
    reference = MemoryLedger(clock)
    reference.add_tenant("a", PLANS["a"])
    clock.at = now.replace(day=1) - timedelta(days=1)  # last month
    reference.add_tenant("b", PLANS["b"])
    clock.at = now
    assert reference.current_period("a") == period
    return reference, clock


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
    later: st.SearchStrategy[tuple[str, list[Any]]] = st.one_of(
        st.tuples(st.just("end"), ends), st.tuples(st.just("reserve"), reserves),
        st.tuples(st.just("end"), ends), st.tuples(st.just("expire"), st.just([])))
    return [("reserve", draw(reserves)), *draw(st.lists(later, max_size=9))]


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=scenarios())
def test_sql_ledger_decides_every_batch_as_the_domain_rules_do(
        conn: psycopg.Connection[Any], steps: list[tuple[str, list[Any]]]) -> None:
    conn.execute("TRUNCATE tenants, api_keys, ledger_streams, ledger_events, reservations, "
                 "balances, ledger_commands, level_balances, prices CASCADE")
    make_tenant(conn, "a", PLANS["a"])
    conn.execute("INSERT INTO tenants (tenant_id, plan_period, grant_tokens, rate_limit_per_min)"
                 " VALUES ('b', 'month', %s, 600)", (PLANS["b"],))
    conn.execute("INSERT INTO ledger_streams (tenant_id) VALUES ('b')")
    ledger = PostgresLedger(conn)
    period = ledger.current_period("a")
    reference, clock = reference_ledger(period)
    for command, batch in steps:
        if command == "expire":
            conn.execute("UPDATE reservations SET reserved_at = now() - interval '1 hour'")
            outcomes = sorted(ledger.expire_stale(ttl_s=600), key=lambda o: o.request_id)
            clock.advance(3600)  # and back: later decisions stay in this period
            expected = sorted(reference.expire_stale(ttl_s=600), key=lambda o: o.request_id)
            clock.advance(-3600)
            assert [_row(o) for o in outcomes] == [_row(o) for o in expected]
            continue
        if command == "reserve":
            outcomes, expected = ledger.reserve(batch), reference.reserve(batch)
        else:
            outcomes, expected = ledger.end(batch), reference.end(batch)
        assert [_row(o) for o in outcomes] == [_row(o) for o in expected], (command, batch)
        assert [o.request_id for o in outcomes] == [c.request_id for c in batch]
        # An outcome with an event names it by its sequence number.
        named = {o.seq: (o.request_id, o.kind) for o in outcomes if o.kind}
        stored = conn.execute("SELECT seq, request_id, kind FROM ledger_events "
                              "WHERE seq = ANY(%s)", (list(named),)).fetchall()
        assert {seq: (rid, kind) for seq, rid, kind in stored} == named
        for tenant in PLANS:
            assert ledger.balance(tenant, period) == reference.balance(tenant, period)
    # The events themselves: stream versions follow the sequence, nothing ends twice, and the
    # balances snapshot equals their replay.
    replayed = audit.replay(conn)
    audit.compare_snapshot(replayed, conn, None, None)
    assert replayed.findings == []
