"""confluent-kafka clients configured for quotaflow, the `Publisher` over a producer, and topic
creation from kafka/topics.yaml."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from cloudevents.core.bindings.kafka import KafkaMessage
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from events.catalog import topic_specs
from events.envelope import Envelope, to_kafka
from quotaflow.ports import PublishTimeout
from quotaflow.settings import Settings

log = logging.getLogger(__name__)


def producer_config(settings: Settings) -> dict[str, Any]:
    """Idempotent, fully acknowledged production: a retried send is never duplicated."""
    return {
        "bootstrap.servers": settings.kafka_bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 2,
        "compression.type": "none",
    }


def make_producer(settings: Settings) -> Producer:
    """A producer for `settings`' brokers."""
    return Producer(producer_config(settings))


def make_consumer(settings: Settings, group: str, **overrides: Any) -> Consumer:
    """A consumer in `group` that commits offsets only when told to."""
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "group.id": group,
        # Offsets are committed by hand, after outputs are flushed and the ledger committed.
        "enable.auto.commit": False,
        # Tansu's high watermark is unreliable after batched produce; `latest` re-delivers.
        "auto.offset.reset": "earliest",
        "session.timeout.ms": settings.kafka_session_timeout_ms,
        "heartbeat.interval.ms": max(500, settings.kafka_session_timeout_ms // 4),
        "fetch.wait.max.ms": settings.kafka_fetch_wait_max_ms,
        "partition.assignment.strategy": "cooperative-sticky",
    }
    config.update(overrides)
    return Consumer(config)


def produce(producer: Producer, topic: str, message: KafkaMessage) -> None:
    """Queue `message` on `topic`, waiting while the local queue is full."""
    while True:
        try:
            producer.produce(topic, value=message.value, key=message.key,
                             headers=list(message.headers.items()))
            return
        except BufferError:  # local queue full: let deliveries drain, then retry
            producer.poll(0.05)


def flush(producer: Producer, timeout_s: float = 30.0) -> None:
    """Wait until every queued message is delivered; RuntimeError if some are not in time."""
    remaining = producer.flush(timeout_s)
    if remaining:
        raise RuntimeError(f"{remaining} Kafka messages not delivered within {timeout_s} s")


def create_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Create every declared topic (and its dead-letter topic) that does not exist yet."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    wanted = [NewTopic(settings.topic(t.name), num_partitions=t.partitions, replication_factor=1)
              for t in topic_specs() if settings.topic(t.name) not in existing]
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
    tenant, then one flush; not confirmed within `timeout_s` -> `PublishTimeout`."""

    def __init__(self, producer: Producer, topic: Callable[[str], str],
                 timeout_s: float = 10.0) -> None:
        self.producer = producer
        self.topic = topic
        self.timeout_s = timeout_s

    @classmethod
    def from_settings(cls, settings: Settings, timeout_s: float = 10.0) -> KafkaPublisher:
        """A publisher with its own producer, to `settings`' prefixed topics."""
        return cls(make_producer(settings), settings.topic, timeout_s)

    def publish(self, envelopes: Sequence[Envelope]) -> None:
        """Hand the envelopes to Kafka; returns once the brokers hold them all."""
        if not envelopes:
            return
        for envelope in envelopes:
            produce(self.producer, self.topic(envelope.type.topic), to_kafka(envelope))
        remaining = self.producer.flush(self.timeout_s)
        if remaining:
            raise PublishTimeout(f"{remaining} Kafka messages not delivered within "
                                 f"{self.timeout_s} s")
