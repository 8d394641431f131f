"""The `Publisher` contract, run against the in-memory publisher, Kafka (the session's broker:
Apache Kafka where it runs) and Tansu (the embedded broker): what `publish` returned from is held by
the bus, decodable, in order, under its event type's topic and keyed by tenant; a bus that does not
confirm in time raises `PublishTimeout`. `-k memory` runs the fake alone, with no services."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import pytest

from quotaflow.adapters.memory.publisher import MemoryPublisher
from quotaflow.events.envelope import Envelope, from_kafka
from quotaflow.events.payloads import Admitted, Message
from quotaflow.ports import Publisher, PublishTimeout
from quotaflow.settings import Settings


@dataclass
class Bus:
    """A publisher, what the bus holds of a tenant's envelopes, and one that cannot confirm."""

    publisher: Publisher
    held: Callable[[str, int], list[Envelope]]
    unavailable: Callable[[], Publisher]


def _memory() -> Bus:
    publisher = MemoryPublisher()

    def unavailable() -> Publisher:
        down = MemoryPublisher()
        down.unavailable = True
        return down

    return Bus(publisher, lambda tenant, n: [e for e in publisher.published
                                             if e.tenant == tenant][:n], unavailable)


def _kafka(bootstrap: str) -> Iterator[Bus]:
    from confluent_kafka import Producer

    from quotaflow.adapters import kafka

    settings = replace(Settings(), kafka_bootstrap=bootstrap,
                       topic_prefix=f"contract-{uuid.uuid4().hex[:8]}.")
    kafka.create_topics(settings)
    publisher = kafka.KafkaPublisher.from_settings(settings)

    def held(tenant: str, n: int) -> list[Envelope]:
        consumer = kafka.make_consumer(settings, f"contract-{uuid.uuid4().hex}")
        consumer.subscribe([settings.topic("admitted")])
        out: list[Envelope] = []
        deadline = datetime.now(UTC).timestamp() + 20
        while len(out) < n and datetime.now(UTC).timestamp() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            envelope = from_kafka(msg.headers(), msg.key(), msg.value())
            if envelope.tenant == tenant:
                assert msg.key() == tenant.encode()
                out.append(envelope)
        consumer.close()
        return out

    def unavailable() -> Publisher:
        # A closed port on purpose: its connection errors are expected, so not logged.
        producer = Producer({"bootstrap.servers": "127.0.0.1:1", "message.timeout.ms": 1000,
                             "log_level": 0})
        return kafka.KafkaPublisher(producer, settings.topic, timeout_s=0.3)

    yield Bus(publisher, held, unavailable)
    publisher.close(5)


@pytest.fixture(params=["memory", "kafka", "tansu"])
def bus(request: pytest.FixtureRequest) -> Iterator[Bus]:
    if request.param == "memory":
        yield _memory()
    elif request.param == "kafka":
        yield from _kafka(request.getfixturevalue("kafka_bootstrap"))
    else:  # the embedded broker the demo runs on where Java is absent
        yield from _kafka(request.getfixturevalue("tansu_bootstrap"))


def admitted(tenant: str, n: int) -> Envelope:
    return Envelope.of(Admitted(
        request_id=f"{tenant}-r{n}", tenant=tenant, key_id="k1", model="m",
        messages=(Message("user", f"prompt {n}"),), max_tokens=8, temperature=0.5, top_p=None,
        seed=n, admitted_at_ms=datetime(2026, 11, 29, 12, 0, tzinfo=UTC)), "admit")


def test_published_envelopes_are_held_in_order_with_their_payloads(bus: Bus) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    sent = [admitted(tenant, n) for n in range(3)]
    bus.publisher.publish(sent)
    held = bus.held(tenant, 3)
    assert [(e.id, e.type.name, e.source, e.payload) for e in held] == [
        (e.id, e.type.name, e.source, e.payload) for e in sent]


def test_publishing_nothing_is_harmless(bus: Bus) -> None:
    bus.publisher.publish([])
    bus.unavailable().publish([])


def test_a_bus_that_does_not_confirm_raises_publish_timeout(bus: Bus) -> None:
    with pytest.raises(PublishTimeout):
        bus.unavailable().publish([admitted("down", 1)])


def test_concurrent_publishes_each_return_once_their_own_envelopes_are_held(bus: Bus) -> None:
    from concurrent.futures import ThreadPoolExecutor

    tenant = f"t-{uuid.uuid4().hex[:8]}"
    sent = [admitted(tenant, n) for n in range(24)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda e: bus.publisher.publish([e]), sent))
    held = bus.held(tenant, 24)
    assert sorted(e.id for e in held) == sorted(e.id for e in sent)


def test_a_closed_kafka_publisher_is_held_by_no_thread_of_its_own(kafka_bootstrap: str) -> None:
    # Its delivery thread referenced it for good: every publisher a process made lived on, and
    # kept its producer polling the broker, until the process exited.
    import gc
    import weakref

    from quotaflow.adapters import kafka

    settings = replace(Settings(), kafka_bootstrap=kafka_bootstrap,
                       topic_prefix=f"close-{uuid.uuid4().hex[:8]}.")
    kafka.create_topics(settings)
    publisher = kafka.KafkaPublisher.from_settings(settings)
    publisher.publish([admitted("closing", 1)])
    publisher.close()
    gone = weakref.ref(publisher)
    del publisher
    gc.collect()
    assert gone() is None
