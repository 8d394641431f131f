"""Publishes committed ledger events to the ledger topic (a transactional outbox).

The ledger table is the outbox: this relay tails it by sequence from a cursor kept in
PostgreSQL, produces, flushes, and only then moves the cursor. Nothing that did not commit is
published; nothing that committed is lost (at-least-once: readers dedupe by the event id
`ledger/<seq>`). One relay at a time holds the cursor row; the others skip."""

from __future__ import annotations

import logging
from datetime import UTC

from quotaflow.adapters import kafka
from quotaflow.events.catalog import EVENTS
from quotaflow.events.envelope import Envelope, to_kafka
from quotaflow.events.payloads import LedgerEntry
from quotaflow.ledger.commands import StoredEvent
from quotaflow.ledger.store import PostgresLedger

log = logging.getLogger(__name__)
CURSOR = "ledger-topic"


def ledger_envelope(ev: StoredEvent) -> Envelope:
    """The record of one committed ledger event: id `ledger/<seq>`, timed when it was recorded."""
    entry = LedgerEntry(seq=ev.seq, tenant=ev.tenant, stream_version=ev.stream_version,
                        kind=ev.kind, request_id=ev.request_id, period=ev.period,
                        amount=ev.amount, released=ev.released, recorded_at_ms=ev.recorded_at,
                        key_id=ev.key_id, team_id=ev.team_id, usd=ev.usd,
                        usd_released=ev.usd_released, model=ev.model,
                        price_version=ev.price_version, input_tokens=ev.input_tokens)
    return Envelope(type=EVENTS[LedgerEntry.event_name], id=f"ledger/{ev.seq}",
                    source="/quotaflow/ledger", tenant=ev.tenant, payload=entry,
                    time=ev.recorded_at.astimezone(UTC))


class LedgerRelay:
    """The `LedgerOutbox` on PostgreSQL and Kafka."""

    def __init__(self, ledger: PostgresLedger, producer: kafka.AnyProducer, topic: str) -> None:
        self.ledger = ledger
        self.producer = producer
        self.topic = topic

    def publish_pending(self, batch: int = 5000) -> int:
        """Publish every committed event after the cursor; returns how many."""
        conn = self.ledger.conn
        published = 0
        while True:
            with conn.transaction():
                row = conn.execute("SELECT seq FROM outbox_cursors WHERE name = %s "
                                   "FOR UPDATE SKIP LOCKED", (CURSOR,)).fetchone()
                if row is None:
                    return published  # another relay is publishing
                events = self.ledger.events_after(int(row[0]), batch)
                for ev in events:
                    kafka.produce(self.producer, self.topic, to_kafka(ledger_envelope(ev)))
                kafka.flush(self.producer)
                if events:
                    conn.execute("UPDATE outbox_cursors SET seq = %s WHERE name = %s",
                                 (events[-1].seq, CURSOR))
                published += len(events)
            if len(events) < batch:
                if published:
                    log.info("published %d ledger events to %s", published, self.topic)
                return published

    def close(self) -> None:
        self.producer.flush(10)
        self.ledger.close()
