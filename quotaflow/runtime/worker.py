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
from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message

from quotaflow.adapters import kafka
from quotaflow.compose import wire
from quotaflow.events.envelope import Envelope, UndecodableEvent, from_kafka
from quotaflow.events.payloads import Payload
from quotaflow.runtime import faults, metrics
from quotaflow.runtime.gaps import GapGuard, first_offsets, seek
from quotaflow.runtime.handling import client_reason, dead_letter, handle_with_retries, publish
from quotaflow.runtime.inflight import InFlight, batch_offsets, rewind_offsets
from quotaflow.runtime.step import AnyStep, Held, Resources
from quotaflow.settings import Settings

log = logging.getLogger(__name__)
Batch = list[tuple[Message | None, Envelope]]
# The longest wait for new records while batches are being handled: the loop publishes a
# finished batch only between two polls (librdkafka's local queue wait; no broker request).
IN_FLIGHT_POLL_S = 0.005


def take_more(consume: Callable[[int, float], list[Message]], room: int,
              window_s: float) -> list[Message]:
    """Up to `room` more records for a batch whose first has arrived: what is already queued,
    then, only if something was (records are arriving), what else comes within `window_s`."""
    # An idle step does not wait the window: one request at a time, every step paid it
    # (5 steps x 5 ms of a 115 ms pipeline; BENCHMARKS.md, the latency real Kafka allows).
    # Under load records queue while a batch is handled, so the window still fills batches.
    if room <= 0:
        return []
    got = consume(room, 0)
    if got and len(got) < room and window_s > 0:
        got += consume(room - len(got), window_s)
    return got


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
        self.in_flight = InFlight(step.in_flight(settings), step.name)
        self.gaps = GapGuard(step.name)

    def run(self, stop: threading.Event) -> None:
        self._stop = stop
        topics = [self.settings.topic(name) for name in self.step.consumes]
        self.consumer.subscribe(topics, on_assign=self._assigned, on_revoke=self._revoked)
        log.info("step %s consuming %s", self.step.name, ", ".join(topics))
        try:
            while not stop.is_set():
                self.poll_once(timeout_s=0.2)
        except Exception:  # the supervisor restarts the process
            log.exception("step %s: the consumer loop failed", self.step.name)
            raise
        finally:
            self._drain()
            self.in_flight.close()
            self.consumer.close()
            with contextlib.suppress(KafkaException):  # a producer that failed for good
                self.producer.flush(10)
            self.resources.close()

    def _assigned(self, consumer: Consumer, partitions: list[Any]) -> None:
        log.info("step %s assigned %d partitions", self.step.name, len(partitions))
        self.gaps.forget(partitions)
        self.gaps.expect(first_offsets(consumer, partitions))

    def _revoked(self, _consumer: Consumer, partitions: list[Any]) -> None:
        log.info("step %s revoked %d partitions", self.step.name, len(partitions))
        self._drain()  # commit what is done while the partitions are still ours
        self.gaps.forget(partitions)

    def _drain(self) -> None:
        while len(self.in_flight):
            self.in_flight.wait(None)
            try:
                self._collect()
            except Exception:
                log.exception("step %s: could not finish the batches in flight", self.step.name)
                self.in_flight.abandon()

    def poll_once(self, timeout_s: float) -> int:
        """Poll a batch and hand it to the handler; publish and commit what has finished.
        Answers how many records had their outputs published by this call."""
        self._maybe_tick()
        if self.in_flight.full():
            self.in_flight.wait(timeout_s)
            return self._collect()
        # consume(n, timeout) waits for all n records or the whole timeout: wait for the first
        # record only, then take what else is queued or arriving (`take_more`).
        if len(self.in_flight):  # a batch that finishes is published within this wait
            timeout_s = min(timeout_s, IN_FLIGHT_POLL_S)
        first = self.consumer.poll(timeout_s)
        if first is None:
            return self._collect()
        msgs = [first]
        room = self.step.batch_max(self.settings) - 1
        if self.in_flight.limit > 1:  # a record a handler call: no more than the free slots
            room = min(room, self.in_flight.free() - 1)
        msgs += take_more(self.consumer.consume, room, self.settings.batch_wait_ms / 1000)
        msgs, rereads = self.gaps.screen(msgs)  # records the broker skipped: read them again
        seek(self.consumer, rereads, self.step.name)
        if not msgs:
            return self._collect()
        batch: Batch = []
        for msg in msgs:
            if msg.error():
                log.warning("consumer error on %s: %s", msg.topic(), msg.error())
                continue
            try:
                ev = from_kafka(msg.headers(), msg.key(), msg.value())
            except UndecodableEvent as exc:
                dead_letter(self.step, self.producer, msg,
                            f"undecodable: {exc}" + (f" ({exc.internal})" if exc.internal else ""))
                continue
            if ev.type.name not in self.step.consumes:
                dead_letter(self.step, self.producer, msg, f"unexpected_type: {ev.type.ce_type}")
                continue
            batch.append((msg, ev))
        for name, n in Counter(ev.type.name for _, ev in batch).items():
            metrics.EVENTS_IN.labels(self.step.name, name).inc(n)
        if self.in_flight.limit == 1:
            self.in_flight.submit(msgs, len(batch), lambda: self._handle(batch))
        else:  # a handler call per record, each published the moment it is done (infer)
            decoded = {id(msg): (msg, ev) for msg, ev in batch}
            for msg in msgs:
                one = [decoded[id(msg)]] if id(msg) in decoded else []
                self.in_flight.submit([msg], len(one), partial(self._handle, one))
        return self._collect()

    def _handle(self, batch: Batch) -> list[Payload]:
        if not batch:
            return []
        metrics.BATCH_SIZE.labels(self.step.name).observe(len(batch))
        return handle_with_retries(self.step, self.ports, self.settings, batch, self._poison)

    def _collect(self) -> int:
        """Publish the outputs of every finished batch, then commit the offsets of the leading
        batches whose outputs are all durable. An infrastructure error abandons every batch in
        flight: they are all read again after a backoff."""
        finished = self.in_flight.finished()
        if not finished:
            return 0
        try:
            for polled in finished:
                publish(self.step, self.settings, self.producer, polled.outputs.result())
                polled.published = True
            # Also delivers the dead letters produced while the batches were decoded and handled.
            kafka.flush(self.producer)
        except Exception as exc:
            if not faults.is_infrastructure(exc):
                raise
            self._retry_later(self.in_flight.abandon(), exc)
            return 0
        self._failures = 0
        # Offsets only after the outputs (and the ledger, inside the handler) are durable. The
        # commit itself may be asynchronous: if it is lost, the batch is redelivered, harmlessly.
        # The offsets are these batches', named here: commit() without them commits whatever has
        # been polled when librdkafka gets round to it, which can be the next batch, still
        # unprocessed (a SIGKILLed reserve lost a decided request that way).
        done = batch_offsets(self.in_flight.committable())
        if done:
            self.consumer.commit(offsets=done, asynchronous=True)
        return sum(polled.records for polled in finished)

    def _retry_later(self, msgs: Sequence[Message], exc: Exception) -> None:
        """Rewind to the batch's first offsets (nothing committed), back off, and let the
        next poll take the same records again."""
        delay = faults.backoff_s(self._failures, self.settings.retry_backoff_max_s)
        self._failures += 1
        faults.INFRA_RETRIES.labels(self.step.name, faults.error_name(exc)).inc()
        log.warning("step %s: %s: %s; batch of %d retried in %.1f s (attempt %d)",
                    self.step.name, faults.error_name(exc), str(exc)[:300], len(msgs), delay,
                    self._failures)
        seek(self.consumer, rewind_offsets(msgs), self.step.name)
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
        return self.step.on_poison(ev.payload, client_reason(reason), self.ports)

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
