"""The ledger topic is at least once, not complete: a broker that loses its data loses ledger
events the relay already published. A tenant's stream versions have no holes, so the roll-up
store sees the loss as a hole and fills it from PostgreSQL, in the same transaction: the
roll-ups stay equal to the ledger."""

from __future__ import annotations

from quotaflow.adapters import postgres as db
from quotaflow.adapters.tenant_store import create_tenant
from quotaflow.analytics.check import check_rollups
from quotaflow.analytics.rollup import Batch
from quotaflow.analytics.store import PostgresUsageStore
from quotaflow.events.payloads import LedgerEntry
from quotaflow.ledger.commands import ReserveTokens, SettleReservation, StoredEvent
from quotaflow.ledger.store import PostgresLedger
from tests.services import fresh_database

TOPIC = "quotaflow.ledger"


def entry(e: StoredEvent) -> LedgerEntry:
    return LedgerEntry(e.seq, e.tenant, e.stream_version, e.kind.value, e.request_id, e.period,
                       e.amount, e.released, e.recorded_at)


def test_ledger_events_lost_between_two_delivered_ones_are_rolled_up_from_the_ledger() -> None:
    with db.connect(fresh_database("qf_test_analytics_gaps"), autocommit=True) as conn:
        create_tenant(conn, "acme", 1000)
        ledger = PostgresLedger(conn)
        ledger.reserve([ReserveTokens("acme", f"r{i}", 50, "h") for i in range(3)])
        ledger.end([SettleReservation("acme", "r0", 20, "s")])
        events = [entry(e) for e in ledger.events_after(0)]
        assert [e.stream_version for e in events] == [1, 2, 3, 4, 5]
        store = PostgresUsageStore(conn)
        # The topic delivered the grant and the settlement; the three reservations were lost.
        store.apply(Batch("g", [events[0]], [], {(TOPIC, 0): 1}))
        applied = store.apply(Batch("g", [events[4]], [], {(TOPIC, 0): 2}))
        assert applied.ledger == 4
        check = check_rollups(conn)
        assert (check.findings, check.pending, check.compared) == ([], 0, 5)
        # The lost events arriving late, or again, count nothing twice.
        store.apply(Batch("g", events[1:4], [], {(TOPIC, 0): 5}))
        assert check_rollups(conn).findings == []
