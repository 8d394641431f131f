"""`quotaflow alerts run`: a consumer group of its own on the ledger topic that applies each
polled batch to the alerts' state in PostgreSQL (`store`: offsets in the batch's transaction,
so a replay or a restart sends nothing twice), and a sender that delivers what is due, signed,
retrying with exponential backoff until the receiver answers 2xx."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from quotaflow.adapters import kafka
from quotaflow.alerts import webhooks
from quotaflow.alerts.store import PostgresAlertStore
from quotaflow.analytics.consumer import Undecodable, decode
from quotaflow.events.payloads import LedgerEntry
from quotaflow.runtime.gaps import GapGuard, first_offsets, seek
from quotaflow.settings import Settings

log = logging.getLogger("quotaflow.alerts")
STEP = "alerts"
BACKOFF_MAX_S = 3600.0


def backoff_s(attempts: int, base_s: float) -> float:
    """The wait after the `attempts`-th failed attempt: doubling from `base_s`, at most an
    hour."""
    return float(min(base_s * 2 ** (attempts - 1), BACKOFF_MAX_S))


class AlertConsumer:
    """Polls the ledger topic and applies each batch to `store`, which keeps its offsets."""

    def __init__(self, settings: Settings, store: PostgresAlertStore, group: str | None = None,
                 batch_max: int = 1000, poll_s: float = 0.5) -> None:
        self.store = store
        self.group = group or f"{settings.consumer_group_prefix}{STEP}"
        self.batch_max = batch_max
        self.poll_s = poll_s
        # Eager (range) assignment, positions from the database, as the analytics consumer.
        self.consumer: Consumer = kafka.make_consumer(
            settings, self.group, **{"partition.assignment.strategy": "range"})
        self.consumer.subscribe([settings.topic("ledger")], on_assign=self._on_assign)
        self.gaps = GapGuard(STEP)  # a batch the broker skipped would miss a crossing

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        stored = self.store.offsets(self.group, [(p.topic, p.partition) for p in partitions])
        for p in partitions:
            p.offset = stored.get((p.topic, p.partition), OFFSET_BEGINNING)
        consumer.assign(partitions)
        self.gaps.forget(partitions)
        self.gaps.expect(first_offsets(consumer, partitions))

    def poll_once(self) -> int:
        """Poll one batch and apply it; the deliveries it made due."""
        messages, rereads = self.gaps.screen(self.consumer.consume(self.batch_max, self.poll_s))
        seek(self.consumer, rereads, STEP)
        entries: list[LedgerEntry] = []
        offsets: dict[tuple[str, int], int] = {}
        for m in messages:
            if not _ours(m):
                continue
            topic, partition, offset = m.topic(), m.partition(), m.offset()
            assert topic is not None and partition is not None and offset is not None
            offsets[(topic, partition)] = offset + 1
            try:
                payload, _ = decode(m.headers(), m.value())
            except Undecodable as exc:
                log.warning("skipping %s[%d]@%d: %s", topic, partition, offset, exc)
                continue
            if isinstance(payload, LedgerEntry):
                entries.append(payload)
        if not offsets:
            return 0
        return self.store.apply(self.group, entries, offsets, datetime.now(UTC))

    def rewind(self) -> None:
        """Back to the stored offsets (after a failed apply)."""
        self._on_assign(self.consumer, self.consumer.assignment())

    def close(self) -> None:
        self.consumer.close()


def _ours(m: Message) -> bool:
    err = m.error()
    if err is not None and err.code() != KafkaError._PARTITION_EOF:
        log.warning("consume error: %s", err)
    return err is None


def send_due(store: PostgresAlertStore, base_s: float,
             post: Callable[[str, str, str, int, str], str | None] = webhooks.post) -> int:
    """Attempt every due delivery once; how many were delivered. A failed one is due again
    after its backoff, with the same webhook-id and body."""
    sent = 0
    for d in store.claim_due():
        error = post(d.url, d.secret, d.webhook_id, int(time.time()), d.body)
        if error is None:
            store.delivered(d.webhook_id)
            sent += 1
        else:
            log.info("alert %s not delivered (attempt %d): %s", d.webhook_id, d.attempts + 1,
                     error)
            store.failed(d.webhook_id, error, backoff_s(d.attempts + 1, base_s))
    return sent


def run(consumer: AlertConsumer, sender_store: PostgresAlertStore, stop: threading.Event,
        base_s: float = 2.0) -> None:
    """Apply batches and send what is due until `stop` is set. A database error rewinds to
    the stored offsets before polling again, as the analytics consumer does."""
    backoff, rewind = 0.5, False
    while not stop.is_set():
        try:
            if rewind:
                consumer.rewind()
                rewind = False
            consumer.poll_once()
            send_due(sender_store, base_s)
            backoff = 0.5
        except psycopg.Error as exc:
            rewind = True
            log.warning("alerts failed, going back to the stored offsets in %.1f s: %s",
                        backoff, exc)
            stop.wait(backoff)
            backoff = min(backoff * 2, 10.0)
    consumer.close()
