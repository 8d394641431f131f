"""The Kafka consumer loop that runs a step locally (or as a KEDA-scaled Deployment).

At-least-once: poll a batch, handle it, produce the outputs, flush, and only then commit the
offsets. Output ids derive from the request id and the step, and the ledger is idempotent by
request id, so a batch redelivered after a crash changes nothing.

An infrastructure error (`quotaflow.runtime.faults`) commits and dead-letters nothing: the
consumer is rewound to the batch and handles it again after a backoff, for as long as the
outage lasts (the adapters reconnect). Only an error about a record is dead-lettered."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from events.catalog import dead_letter_suffix
from events.envelope import Envelope, UndecodableEvent, from_kafka, to_kafka
from events.payloads import Payload
from quotaflow.adapters import kafka
from quotaflow.runtime import faults, metrics
from quotaflow.runtime.step import AnyStep, Resources
from quotaflow.runtime.wiring import Held, wire
from quotaflow.settings import Settings

log = logging.getLogger(__name__)
Batch = list[tuple[Message | None, Envelope]]
OnDead = Callable[[Message | None, Envelope, str], Sequence[Payload]]


def publish(step: AnyStep, settings: Settings, producer: kafka.AnyProducer,
            payloads: Sequence[Payload]) -> list[Envelope]:
    """Produce each output in the envelope `step` sends it in (not yet flushed)."""
    envelopes = [Envelope.of(p, step.name) for p in payloads]
    for env in envelopes:
        kafka.produce(producer, settings.topic(env.type.topic), to_kafka(env))
    # Counted once per type and batch: a labelled child's lookup per record was a measurable
    # share of a step's CPU.
    for name, n in Counter(env.type.name for env in envelopes).items():
        metrics.EVENTS_OUT.labels(step.name, name).inc(n)
    return envelopes


def dead_letter(step: AnyStep, producer: kafka.AnyProducer, msg: Message, reason: str) -> None:
    original = msg.headers() or []
    headers = list(original.items() if isinstance(original, dict) else original)
    headers += [("qf_dlq_reason", reason.encode()[:2000]), ("qf_dlq_step", step.name.encode()),
                ("qf_dlq_topic", (msg.topic() or "").encode()),
                ("qf_dlq_partition", str(msg.partition()).encode()),
                ("qf_dlq_offset", str(msg.offset()).encode())]
    producer.produce((msg.topic() or "") + dead_letter_suffix(), value=msg.value(), key=msg.key(),
                     headers=headers)
    metrics.DEAD_LETTERS.labels(step.name, reason.split(":")[0][:60]).inc()
    log.warning("dead-lettered %s[%s]@%s: %s", msg.topic(), msg.partition(), msg.offset(), reason)


def _spans(msgs: Sequence[Message]) -> dict[tuple[str, int], tuple[int, int]]:
    """Per partition, the first and the last offset of `msgs` (records in error left out)."""
    spans: dict[tuple[str, int], tuple[int, int]] = {}
    for msg in msgs:
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        if msg.error() is None and topic is not None and partition is not None \
                and offset is not None:
            low, high = spans.get((topic, partition), (offset, offset))
            spans[(topic, partition)] = (min(low, offset), max(high, offset))
    return spans


def rewind_offsets(msgs: Sequence[Message]) -> list[TopicPartition]:
    """Where to seek to read `msgs` again: per partition, its first record's offset."""
    return [TopicPartition(t, p, low) for (t, p), (low, _) in sorted(_spans(msgs).items())]


def batch_offsets(msgs: Sequence[Message]) -> list[TopicPartition]:
    """The offsets to commit once `msgs` are handled: per partition, one past the last."""
    return [TopicPartition(t, p, high + 1) for (t, p), (_, high) in sorted(_spans(msgs).items())]


def handle_with_retries(step: AnyStep, ports: Any, settings: Settings,
                        batch: Sequence[tuple[Message | None, Envelope]],
                        on_dead: OnDead) -> list[Payload]:
    """Handle a batch; if it fails, handle each event alone with retries, and give an event
    that still fails to `on_dead(msg, envelope, reason)` so the rest of the batch goes on.
    An infrastructure error is raised to the caller at once: it is no record's fault."""
    with metrics.HANDLER_SECONDS.labels(step.name).time():
        try:
            return list(step.handle([env.payload for _, env in batch], ports))
        except Exception as exc:
            if faults.is_infrastructure(exc):
                raise
            log.exception("step %s: batch of %d failed; retrying one by one", step.name, len(batch))
    outputs: list[Payload] = []
    for msg, ev in batch:
        reason = ""
        for attempt in range(max(1, settings.handler_retries)):
            try:
                outputs += step.handle([ev.payload], ports)
                break
            except Exception as exc:
                if faults.is_infrastructure(exc):
                    raise
                reason = f"handler_error: {type(exc).__name__}: {exc}"
                log.warning("step %s: %s attempt %d failed: %s\n%s", step.name, ev.id,
                            attempt + 1, reason, traceback.format_exc(limit=3))
                time.sleep(0.05 * (attempt + 1))
        else:
            outputs += on_dead(msg, ev, reason)
    return outputs


class KafkaWorker:
    """One step as a Kafka consumer loop; its ports are wired from `settings` unless given."""

    def __init__(self, step: AnyStep, settings: Settings, ports: Any | None = None,
                 resources: Resources | None = None) -> None:
        if ports is None:
            wired = wire(step.name, settings)
            ports, resources = wired.ports, wired.resources
        self.step = step
        self.settings = settings
        self.ports = ports
        self.resources = resources or Held()
        self.producer = kafka.make_producer(settings)
        self.consumer: Consumer = kafka.make_consumer(
            settings, settings.consumer_group_prefix + step.name)
        self._last_tick = 0.0
        self._failures = 0  # infrastructure errors in a row
        self._stop = threading.Event()

    def run(self, stop: threading.Event) -> None:
        self._stop = stop
        topics = [self.settings.topic(name) for name in self.step.consumes]
        self.consumer.subscribe(topics, on_assign=self._assigned)
        log.info("step %s consuming %s", self.step.name, ", ".join(topics))
        try:
            while not stop.is_set():
                self.poll_once(timeout_s=0.2)
        except Exception:  # the supervisor restarts the process
            log.exception("step %s: the consumer loop failed", self.step.name)
            raise
        finally:
            self.consumer.close()
            with contextlib.suppress(KafkaException):  # a producer that failed for good
                self.producer.flush(10)
            self.resources.close()

    def _assigned(self, _consumer: Consumer, partitions: list[Any]) -> None:
        log.info("step %s assigned %d partitions", self.step.name, len(partitions))

    def poll_once(self, timeout_s: float) -> int:
        self._maybe_tick()
        # consume(n, timeout) waits for all n records or the whole timeout: wait for the first
        # record only, then take what else arrives within the short batching window.
        first = self.consumer.poll(timeout_s)
        if first is None:
            return 0
        msgs = [first]
        room = self.step.batch_max(self.settings) - 1
        if room > 0:
            msgs += self.consumer.consume(num_messages=room,
                                          timeout=self.settings.batch_wait_ms / 1000)
        batch: Batch = []
        for msg in msgs:
            if msg.error():
                log.warning("consumer error on %s: %s", msg.topic(), msg.error())
                continue
            try:
                ev = from_kafka(msg.headers(), msg.key(), msg.value())
            except UndecodableEvent as exc:
                dead_letter(self.step, self.producer, msg, f"undecodable: {exc}")
                continue
            if ev.type.name not in self.step.consumes:
                dead_letter(self.step, self.producer, msg, f"unexpected_type: {ev.type.ce_type}")
                continue
            batch.append((msg, ev))
        for name, n in Counter(ev.type.name for _, ev in batch).items():
            metrics.EVENTS_IN.labels(self.step.name, name).inc(n)
        try:
            if batch:
                metrics.BATCH_SIZE.labels(self.step.name).observe(len(batch))
                outputs = handle_with_retries(self.step, self.ports, self.settings, batch,
                                              self._poison)
                publish(self.step, self.settings, self.producer, outputs)
            kafka.flush(self.producer)
        except Exception as exc:
            if not faults.is_infrastructure(exc):
                raise
            self._retry_later(msgs, exc)
            return 0
        self._failures = 0
        # Offsets only after the outputs (and the ledger, inside the handler) are durable. The
        # commit itself may be asynchronous: if it is lost, the batch is redelivered, harmlessly.
        # The offsets are this batch's, named here: commit() without them commits whatever has
        # been polled when librdkafka gets round to it, which can be the next batch, still
        # unprocessed (a SIGKILLed reserve lost a decided request that way).
        done = batch_offsets(msgs)
        if done:
            self.consumer.commit(offsets=done, asynchronous=True)
        return len(batch)

    def _retry_later(self, msgs: Sequence[Message], exc: Exception) -> None:
        """Rewind to the batch's first offsets (nothing committed), back off, and let the
        next poll take the same records again."""
        delay = faults.backoff_s(self._failures, self.settings.retry_backoff_max_s)
        self._failures += 1
        faults.INFRA_RETRIES.labels(self.step.name, faults.error_name(exc)).inc()
        log.warning("step %s: %s: %s; batch of %d retried in %.1f s (attempt %d)",
                    self.step.name, faults.error_name(exc), str(exc)[:300], len(msgs), delay,
                    self._failures)
        for tp in rewind_offsets(msgs):
            try:
                self.consumer.seek(tp)
            except KafkaException as err:  # no longer ours (rebalanced): its owner re-reads
                log.info("step %s: not rewinding %s[%d]: %s", self.step.name, tp.topic,
                         tp.partition, err)
        if faults.producer_failed(exc):
            log.warning("step %s: the Kafka producer failed for good; opening a new one",
                        self.step.name)
            self.producer = kafka.make_producer(self.settings)
        self._stop.wait(delay)

    def _poison(self, msg: Message | None, ev: Envelope, reason: str) -> Sequence[Payload]:
        if msg is not None:
            dead_letter(self.step, self.producer, msg, reason)
        if self.step.on_poison is None:
            return []
        return self.step.on_poison(ev.payload, reason, self.ports)

    def _maybe_tick(self) -> None:
        interval = self.step.tick_interval_s(self.settings)
        if self.step.tick is None or interval <= 0:
            return
        now = time.monotonic()
        if now - self._last_tick < interval:
            return
        self._last_tick = now
        try:
            publish(self.step, self.settings, self.producer, self.step.tick(self.ports))
            kafka.flush(self.producer)
        except Exception:
            log.exception("step %s: periodic work failed; will retry", self.step.name)
