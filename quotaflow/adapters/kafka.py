"""confluent-kafka clients configured for quotaflow, the `Publisher` over a producer, topic
creation from kafka/topics.yaml, and the start-up check that the brokers take our settings.

Every client is made here, configured by `kafka_config.client_config` (the security settings
by environment included); `check_brokers` is the start-up check."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from cloudevents.core.bindings.kafka import KafkaMessage
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from quotaflow.adapters.kafka_config import KafkaUnavailable as KafkaUnavailable
from quotaflow.adapters.kafka_config import check_brokers as check_brokers
from quotaflow.adapters.kafka_config import client_config as client_config
from quotaflow.adapters.kafka_config import consumer_config
from quotaflow.adapters.kafka_config import producer_config as producer_config
from quotaflow.events.catalog import topic_specs
from quotaflow.events.envelope import Envelope, to_kafka
from quotaflow.ports import PublishTimeout
from quotaflow.settings import Settings

log = logging.getLogger(__name__)


class HealingProducer:
    """A confluent-kafka producer that `flush` replaces with a new one when a flush did not
    deliver everything. An idempotent producer whose broker lost its state (a restarted local
    broker keeps nothing) is refused for good (UNKNOWN_PRODUCER_ID) and would retry forever;
    the callers re-send what was not delivered (their retry), and every consumer is
    idempotent by request id, so a resend duplicates nothing."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.renewed = 0
        self._inner = Producer(config)

    def produce(self, topic: str, value: bytes | None = None, key: Any = None,
                headers: Any = None, on_delivery: Any = None) -> None:
        self._inner.produce(topic, value=value, key=key, headers=headers,
                            on_delivery=on_delivery)

    def poll(self, timeout: float = 0) -> int:
        return int(self._inner.poll(timeout))

    def flush(self, timeout: float = -1) -> int:
        return int(self._inner.flush(timeout))

    def renew(self) -> None:
        """Drop what is queued and start a new client."""
        self._inner.purge()
        self._inner.flush(0)
        self._inner = Producer(self.config)
        self.renewed += 1
        log.warning("Kafka producer renewed after an undelivered flush")


def admin_client(settings: Settings, **overrides: Any) -> AdminClient:
    """An admin client for `settings`' brokers, with their security settings."""
    return AdminClient(client_config(settings, **overrides))


def make_producer(settings: Settings) -> HealingProducer:
    """A producer for `settings`' brokers."""
    return HealingProducer(producer_config(settings))


def make_consumer(settings: Settings, group: str, **overrides: Any) -> Consumer:
    """A consumer in `group` that commits offsets only when told to."""
    return Consumer(consumer_config(settings, group, **overrides))


AnyProducer = Producer | HealingProducer

# Deliveries that failed, by producer: librdkafka drops a message it gave up on from its
# queue, so an empty queue after `flush` does not mean every message was delivered. No lock:
# the report runs inside librdkafka's callbacks, where an error the client left pending (a
# fatal producer error after a broker lost its state) aborts the report between taking a lock
# and releasing it, and the lock stayed held for good (a step hung in `flush`). `setdefault`,
# `append` and `pop` are each atomic under the GIL.
_failed: dict[int, list[str]] = {}


def _on_delivery(producer: AnyProducer) -> Callable[[KafkaError | None, Any], None]:
    def report(err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            _failed.setdefault(id(producer), []).append(str(err))
    return report


def produce(producer: AnyProducer, topic: str, message: KafkaMessage) -> None:
    """Queue `message` on `topic`, waiting while the local queue is full."""
    while True:
        try:
            producer.produce(topic, value=message.value, key=message.key,
                             headers=list(message.headers.items()),
                             on_delivery=_on_delivery(producer))
            return
        except BufferError:  # local queue full: let deliveries drain, then retry
            producer.poll(0.05)


def flush(producer: AnyProducer, timeout_s: float = 5.0) -> None:
    """Wait until every queued message is delivered; `PublishTimeout` (an infrastructure
    error: the caller retries) if some are not in time or failed. The wait is short: a
    producer whose broker lost its state never delivers, and the retry's renewed one does."""
    remaining = producer.flush(timeout_s)
    failed = _failed.pop(id(producer), [])
    if remaining or failed:
        if isinstance(producer, HealingProducer):
            producer.renew()
            _failed.pop(id(producer), None)  # the purged messages' reports
        raise PublishTimeout(f"{remaining} Kafka messages not delivered within {timeout_s} s"
                             + (f", {len(failed)} failed ({failed[0]})" if failed else ""))


def topic_replication(brokers: int) -> int:
    """3 copies of each record (one broker can go), or one on each broker of fewer."""
    return max(1, min(3, brokers))


def create_topics(settings: Settings, timeout_s: float = 30.0,
                  partitions: int | None = None) -> list[str]:
    """Create every declared topic (and its dead-letter topic) that does not exist yet, with
    its declared partitions, or with `partitions` each; `topic_replication` copies, a write
    needing 2 in sync where there are 3 (an acknowledged record survives a broker's loss)."""
    admin = admin_client(settings)
    metadata = admin.list_topics(timeout=timeout_s)
    replicas = topic_replication(len(metadata.brokers))
    wanted = [NewTopic(settings.topic(t.name), num_partitions=partitions or t.partitions,
                       replication_factor=replicas,
                       config={"min.insync.replicas": str(min(2, replicas))})
              for t in topic_specs() if settings.topic(t.name) not in metadata.topics]
    if not wanted:
        return []
    for name, future in admin.create_topics(wanted, request_timeout=timeout_s).items():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
        log.info("created topic %s", name)
    return [t.topic for t in wanted]


class KafkaPublisher:
    """The `Publisher` over a producer: each envelope to its event type's topic, keyed by
    tenant; `publish` waits for its own envelopes' delivery reports only (never a flush,
    which would wait for every other caller's too), served by a polling thread of its own.
    Not confirmed within `timeout_s`, or failed -> `PublishTimeout`, and a `HealingProducer`
    is renewed once for all the callers that saw it fail."""

    def __init__(self, producer: AnyProducer, topic: Callable[[str], str],
                 timeout_s: float = 10.0) -> None:
        self.producer = producer
        self.topic = topic
        self.timeout_s = timeout_s
        self._poller: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = threading.Event()

    @classmethod
    def from_settings(cls, settings: Settings, timeout_s: float = 10.0) -> KafkaPublisher:
        """A publisher with its own producer, to `settings`' prefixed topics."""
        return cls(make_producer(settings), settings.topic, timeout_s)

    def publish(self, envelopes: Sequence[Envelope]) -> None:
        """Hand the envelopes to Kafka; returns once the brokers hold them all."""
        if not envelopes:
            return
        self._start_poller()
        generation = getattr(self.producer, "renewed", 0)
        # Reports arrive on the poller's thread; a SimpleQueue takes them without a lock the
        # report could leave held (see `_failed`).
        reports: queue.SimpleQueue[KafkaError | None] = queue.SimpleQueue()
        for envelope in envelopes:
            message = to_kafka(envelope)
            while True:
                try:
                    self.producer.produce(self.topic(envelope.type.topic), value=message.value,
                                          key=message.key, headers=list(message.headers.items()),
                                          on_delivery=lambda err, _msg: reports.put(err))
                    break
                except BufferError:  # local queue full: the poller drains it
                    time.sleep(0.01)
        deadline = time.monotonic() + self.timeout_s
        failed: list[str] = []
        for delivered in range(len(envelopes)):
            try:
                err = reports.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self._renew(generation)
                raise PublishTimeout(f"{len(envelopes) - delivered} Kafka messages not "
                                     f"delivered within {self.timeout_s} s") from None
            if err is not None:
                failed.append(str(err))
        if failed:
            self._renew(generation)
            raise PublishTimeout(f"{len(failed)} Kafka messages failed ({failed[0]})")

    def _renew(self, generation: int) -> None:
        # Only the first caller to see this producer fail renews it; the others' messages
        # were purged with it and they answer their own PublishTimeout.
        if isinstance(self.producer, HealingProducer):
            with self._lock:
                if self.producer.renewed == generation:
                    self.producer.renew()

    def _start_poller(self) -> None:
        # Started on first use: a server that forks after building the app gives each worker
        # its own.
        if self._poller is not None and self._poller.is_alive():
            return
        with self._lock:
            if self._poller is None or not self._poller.is_alive():
                self._poller = threading.Thread(target=self._poll, name="kafka-delivery",
                                                daemon=True)
                self._poller.start()

    def _poll(self) -> None:
        while not self._closed.is_set():
            self.producer.poll(0.1)

    def close(self, timeout_s: float = 5.0) -> None:
        """Deliver what is queued (for up to `timeout_s`) and stop the delivery thread, which
        would otherwise keep the publisher and its producer alive until the process exits."""
        self._closed.set()
        if self._poller is not None:
            self._poller.join(timeout_s)
        self.producer.flush(timeout_s)

