"""`quotaflow analytics run`: a consumer group on the ledger, completed and failed topics that
rolls each polled batch up into PostgreSQL.

Exactly once without Kafka transactions: the next offsets are written in the batch's own
PostgreSQL transaction (`usage_offsets`), and on every assignment the consumer seeks to them
(to the start of a partition it has none for). Kafka's committed offsets are never read, so a
crash between the database commit and anything else can only replay records whose effects
and offsets committed together, and those are skipped by the offsets, or failing that by the
stream versions and outcome ids the same transaction stored. After each database commit the
same offsets are copied to Kafka (asynchronously, best effort) only so that the group's lag
is visible: KEDA scales the Deployment on it (infra/k8s/analytics-scaledobject.yaml)."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

import psycopg
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    TopicPartition,
)
from prometheus_client import Counter

from quotaflow.adapters import kafka
from quotaflow.analytics.rollup import Batch, Outcome
from quotaflow.analytics.store import UsageStore
from quotaflow.events import avro
from quotaflow.events.catalog import BY_CE_TYPE, parse_dataschema
from quotaflow.events.payloads import PAYLOADS, Completed, Failed, LedgerEntry, from_record
from quotaflow.events.status import OutcomeKind
from quotaflow.runtime import metrics
from quotaflow.runtime.gaps import GapGuard, first_offsets, seek
from quotaflow.settings import Settings

log = logging.getLogger("quotaflow.analytics")
STEP = "analytics"  # the `step` label of the runtime's metrics
TOPICS = ("ledger", "completed", "failed")
SKIPPED = Counter("qf_analytics_skipped_total", "Records the analytics consumer did not roll "
                  "up", ["reason"])


class Undecodable(ValueError):
    """A record that is not one of ours."""


def decode(headers: Any, value: bytes | None) -> tuple[Any, datetime]:
    """The payload of a binary-mode record and its event time (`ce_time`), straight from the
    Avro value: the analytics loop decodes every record, so it skips the CloudEvents object."""
    h = {k: v if isinstance(v, bytes) else str(v or "").encode() for k, v in headers or []}
    etype = BY_CE_TYPE.get(h.get("ce_type", b"").decode(errors="replace"))
    if etype is None or "ce_dataschema" not in h:
        raise Undecodable("not a quotaflow CloudEvent")
    try:
        name, version = parse_dataschema(h["ce_dataschema"].decode())
        payload = from_record(PAYLOADS[name], avro.decode(name, version, value or b""))
        at = datetime.fromisoformat(h["ce_time"].decode()) if "ce_time" in h else None
    except Exception as exc:  # fastavro and the payload classes raise many types on bad input
        raise Undecodable(f"{etype.name}: {exc!r}") from None
    return payload, (at or datetime.now(UTC))


class AnalyticsConsumer:
    """Polls batches and applies each to `store`, which also keeps its offsets."""

    def __init__(self, settings: Settings, store: UsageStore, group: str | None = None,
                 batch_max: int = 1000, poll_s: float = 0.5) -> None:
        self.store = store
        self.group = group or f"{settings.consumer_group_prefix}{STEP}"
        self.batch_max = batch_max
        self.poll_s = poll_s
        self.topics = [settings.topic(t) for t in TOPICS]
        # Eager (range) assignment: a partition is revoked before anyone else gets it, and the
        # callback below sets every assigned partition's position itself.
        self.consumer: Consumer = kafka.make_consumer(
            settings, self.group, **{"partition.assignment.strategy": "range"})
        self.consumer.subscribe(self.topics, on_assign=self._on_assign)
        # A batch the broker skipped would be missing from the roll-ups for good, with no
        # reconciler to re-drive it: read it again (`quotaflow/runtime/gaps.py`).
        self.gaps = GapGuard(STEP)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        stored = self.store.offsets(self.group, [(p.topic, p.partition) for p in partitions])
        for p in partitions:
            p.offset = stored.get((p.topic, p.partition), OFFSET_BEGINNING)
        consumer.assign(partitions)
        self.gaps.forget(partitions)
        self.gaps.expect(first_offsets(consumer, partitions))
        log.info("%s assigned %d partitions of %s", STEP, len(partitions),
                 ", ".join(sorted({p.topic for p in partitions})))

    def batch(self, messages: list[Message]) -> Batch:
        """The batch of polled records; records that are not ours only move the offsets."""
        batch = Batch(self.group)
        for m in messages:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consume error: %s", err)
                continue
            topic, partition, offset = m.topic(), m.partition(), m.offset()
            assert topic is not None and partition is not None and offset is not None
            batch.next_offsets[(topic, partition)] = offset + 1
            try:
                payload, at = decode(m.headers(), m.value())
            except Undecodable as exc:
                SKIPPED.labels("undecodable").inc()
                log.warning("skipping %s[%d]@%d: %s", topic, partition, offset, exc)
                continue
            if isinstance(payload, LedgerEntry):
                batch.ledger.append(payload)
            elif isinstance(payload, Completed):
                batch.outcomes.append(Outcome(
                    OutcomeKind.COMPLETED, payload.request_id, payload.tenant, at,
                    payload.prompt_tokens, payload.completion_tokens, payload.latency_ms))
            elif isinstance(payload, Failed):
                batch.outcomes.append(Outcome(OutcomeKind.FAILED, payload.request_id,
                                              payload.tenant, at))
            else:
                SKIPPED.labels("other_event").inc()
        return batch

    def poll_once(self) -> int:
        """Poll one batch and apply it; returns how many records it held."""
        messages, rereads = self.gaps.screen(self.consumer.consume(self.batch_max, self.poll_s))
        seek(self.consumer, rereads, STEP)
        if not messages:
            return 0
        batch = self.batch(messages)
        started = time.perf_counter()
        applied = self.store.apply(batch)
        self.mirror_offsets(batch)
        metrics.HANDLER_SECONDS.labels(STEP).observe(time.perf_counter() - started)
        metrics.BATCH_SIZE.labels(STEP).observe(len(messages))
        if applied.ledger:
            metrics.EVENTS_IN.labels(STEP, "dev.quotaflow.ledger.entry").inc(applied.ledger)
        if applied.outcomes:
            metrics.EVENTS_IN.labels(STEP, "outcome").inc(applied.outcomes)
        if applied.duplicates:
            SKIPPED.labels("duplicate").inc(applied.duplicates)
        return len(messages)

    def mirror_offsets(self, batch: Batch) -> None:
        """Copy the offsets the database now holds to Kafka, for the lag KEDA reads; never read
        back (`_on_assign` seeks to the database's), so a lost or late copy costs nothing."""
        if batch.next_offsets:
            self.consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o
                                          in sorted(batch.next_offsets.items())],
                                 asynchronous=True)

    def rewind(self) -> None:
        """Put every assigned partition back at its stored offset (after a failed apply)."""
        self._on_assign(self.consumer, self.consumer.assignment())

    def run(self, stop: threading.Event, backoff_max_s: float = 10.0) -> None:
        """Poll and apply until `stop` is set. A database error rewinds to the stored offsets
        before polling again: polling on would apply later records without the failed ones."""
        backoff, rewind = 0.5, False
        while not stop.is_set():
            try:
                if rewind:
                    self.rewind()
                    rewind = False
                self.poll_once()
                backoff = 0.5
            except psycopg.Error as exc:
                rewind = True
                log.warning("roll-up failed, going back to the stored offsets in %.1f s: %s",
                            backoff, exc)
                stop.wait(backoff)
                backoff = min(backoff * 2, backoff_max_s)
        self.close()

    def close(self) -> None:
        """Leave the group."""
        self.consumer.close()
