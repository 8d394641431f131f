"""The `LedgerOutbox` contract, run against the in-memory outbox over `MemoryLedger` and the relay
over `PostgresLedger` (database `qf_test_contract_outbox`) and the session's Kafka broker: each
committed event is published once, in sequence order, and what commits later goes out with the
next call. `-k memory` runs the in-memory outbox alone, with no services."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from quotaflow.adapters.clock import FixedClock
from quotaflow.adapters.memory.ledger import MemoryLedger
from quotaflow.adapters.memory.outbox import MemoryOutbox
from quotaflow.events.envelope import from_kafka
from quotaflow.events.payloads import LedgerEntry
from quotaflow.ledger.commands import ReserveTokens, SettleReservation, StoredEvent
from quotaflow.ports import Ledger, LedgerOutbox

DATABASE = "qf_test_contract_outbox"
TABLES = ("tenants, api_keys, ledger_streams, ledger_events, reservations, balances, "
          "ledger_commands, requests, level_balances, prices")
# What identifies a published event, whatever carries it (the bus keeps time to the millisecond).
Record = tuple[str, int, str, int, str, str | None, str, int, int]


def record(event: StoredEvent | LedgerEntry, event_id: str) -> Record:
    kind = event.kind if isinstance(event.kind, str) else event.kind.value
    return (event_id, event.seq, event.tenant, event.stream_version, kind, event.request_id,
            event.period, event.amount, event.released)


@dataclass
class OutboxUnderTest:
    """The ledger that commits, its outbox, and what the outbox has published so far (once at
    least `n` records are there, or a deadline passes)."""

    ledger: Ledger
    add_tenant: Callable[[str, int], None]
    outbox: LedgerOutbox
    published: Callable[[int], list[Record]]


def _memory() -> OutboxUnderTest:
    ledger = MemoryLedger(FixedClock())
    outbox = MemoryOutbox(ledger)
    return OutboxUnderTest(ledger, ledger.add_tenant, outbox, lambda _n: [
        record(e, f"ledger/{e.seq}") for e in outbox.published])


def _postgres_kafka(bootstrap: str) -> Iterator[OutboxUnderTest]:
    import psycopg
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    from quotaflow.adapters.tenant_store import create_tenant
    from quotaflow.ledger.outbox import LedgerRelay
    from quotaflow.ledger.store import PostgresLedger
    from tests.services import fresh_database

    url = fresh_database(DATABASE)
    # One partition, so that the order of the whole topic is the order the relay produced in.
    topic = f"contract-outbox-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result()
    # The relay holds its own connection, as deployed: it sees only what the ledger committed.
    decisions = psycopg.connect(url, autocommit=True)
    decisions.execute(f"TRUNCATE {TABLES} CASCADE")
    decisions.execute("UPDATE outbox_cursors SET seq = 0")
    relay = LedgerRelay(PostgresLedger(psycopg.connect(url, autocommit=True)),
                        Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                                  "acks": "all"}), topic)
    # The local broker joins a group only after session.timeout.ms / 2.
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"contract-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "session.timeout.ms": 2000, "heartbeat.interval.ms": 500,
                         "fetch.wait.max.ms": 50})
    consumer.subscribe([topic])
    seen: list[Record] = []

    def published(n: int) -> list[Record]:
        # Wait for `n`, then a little longer: a duplicate or an extra must have time to show.
        deadline, quiet_until = time.monotonic() + 20, float("inf")
        while time.monotonic() < min(deadline, quiet_until):
            msg = consumer.poll(0.1)
            if msg is not None and not msg.error():
                envelope = from_kafka(msg.headers(), msg.key(), msg.value())
                assert isinstance(envelope.payload, LedgerEntry)
                seen.append(record(envelope.payload, envelope.id))
            if len(seen) >= n and quiet_until == float("inf"):
                quiet_until = time.monotonic() + 1.0
        return list(seen)

    def add_tenant(tenant: str, tokens: int) -> None:
        create_tenant(decisions, tenant, tokens)

    yield OutboxUnderTest(PostgresLedger(decisions), add_tenant, relay, published)
    consumer.close()
    relay.close()
    decisions.close()


@pytest.fixture(params=["memory", "postgres"])
def out(request: pytest.FixtureRequest) -> Iterator[OutboxUnderTest]:
    if request.param == "memory":
        yield _memory()
    else:
        yield from _postgres_kafka(request.getfixturevalue("kafka_bootstrap"))


def committed(out: OutboxUnderTest) -> list[Record]:
    return [record(e, f"ledger/{e.seq}") for e in out.ledger.events_after(0)]


def some_decisions(out: OutboxUnderTest) -> None:
    out.add_tenant("acme", 100)
    out.add_tenant("bravo", 50)
    out.ledger.reserve([ReserveTokens("acme", "a1", 40, "h"), ReserveTokens("bravo", "b1", 60, "h"),
                        ReserveTokens("acme", "a2", 30, "h")])
    out.ledger.end([SettleReservation("acme", "a1", 10, "s")])


def test_every_committed_event_is_published_once_in_sequence_order(
        out: OutboxUnderTest) -> None:
    some_decisions(out)
    events = committed(out)
    assert len(events) == 6  # two grants, two reservations, a rejection, a settlement
    assert out.outbox.publish_pending() == len(events)
    assert out.published(len(events)) == events
    assert [r[1] for r in events] == sorted({r[1] for r in events})


def test_a_second_call_publishes_nothing_new(out: OutboxUnderTest) -> None:
    some_decisions(out)
    n = out.outbox.publish_pending()
    first = out.published(n)
    out.ledger.reserve([ReserveTokens("acme", "a2", 30, "h")])  # a redelivery: no new event
    assert out.outbox.publish_pending() == 0
    assert out.published(n) == first == committed(out)


def test_events_committed_later_are_published_by_the_next_call(out: OutboxUnderTest) -> None:
    some_decisions(out)
    before = out.outbox.publish_pending()
    out.ledger.end([SettleReservation("acme", "a2", 30, "s"),
                    SettleReservation("bravo", "b1", 1, "s")])  # b1 was rejected: no event
    out.ledger.grant("bravo", 25)
    events = committed(out)
    assert out.outbox.publish_pending() == len(events) - before == 2
    assert out.published(len(events)) == events
    assert out.outbox.publish_pending() == 0
