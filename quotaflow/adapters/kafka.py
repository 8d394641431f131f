"""confluent-kafka clients configured for quotaflow, and topic creation from kafka/topics.yaml."""

from __future__ import annotations

import logging
from typing import Any

from cloudevents.core.bindings.kafka import KafkaMessage
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from events.catalog import topic_specs
from quotaflow.settings import Settings

log = logging.getLogger(__name__)


def producer_config(settings: Settings) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.kafka_bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 2,
        "compression.type": "none",
    }


def make_producer(settings: Settings) -> Producer:
    return Producer(producer_config(settings))


def make_consumer(settings: Settings, group: str, **overrides: Any) -> Consumer:
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
    while True:
        try:
            producer.produce(topic, value=message.value, key=message.key,
                             headers=list(message.headers.items()))
            return
        except BufferError:  # local queue full: let deliveries drain, then retry
            producer.poll(0.05)


def flush(producer: Producer, timeout_s: float = 30.0) -> None:
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
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
        log.info("created topic %s", name)
    return [t.topic for t in wanted]
