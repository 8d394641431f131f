"""The Kafka loop on a real broker: a record that fails every retry goes to the dead-letter
topic with the reason, its poison output (infer's `failed`, which releases the reservation)
is produced, and the rest of the batch goes on; offsets are committed after the outputs, and
with batches handled at once, in each partition only up to the first batch not yet done; and
records a fetch skipped are read again."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace

from confluent_kafka import Consumer, Message, Producer, TopicPartition

from quotaflow.adapters import kafka
from quotaflow.events.envelope import Envelope, from_kafka, to_kafka
from quotaflow.events.payloads import Failed, Reserved
from quotaflow.functions.infer.handler import on_poison as infer_poison
from quotaflow.runtime.step import Step
from quotaflow.runtime.worker import KafkaWorker
from quotaflow.settings import Settings
from tests.unit.fakes import reserved as reserved_payload
from tests.unit.runtime_fakes import Fragile, fragile_step


def reserved(request_id: str, content: str) -> Envelope:
    """A `reserved` record as reserve publishes it."""
    payload: Reserved = reserved_payload(request_id, content, 6, max_tokens=4)
    return Envelope.of(payload, "reserve")


def drain(bootstrap: str, topic: str, want: int, timeout_s: float = 20) -> list[Message]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex,
                  "auto.offset.reset": "earliest", "session.timeout.ms": 2000,
                  "fetch.wait.max.ms": 50})
    c.subscribe([topic])
    got: list[Message] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < want and time.monotonic() < deadline:
        got += [m for m in c.consume(50, 0.3) if not m.error()]
    c.close()
    return got


def test_poison_record_is_dead_lettered_answered_failed_and_the_batch_goes_on(
        kafka_bootstrap: str) -> None:
    prefix = f"w{uuid.uuid4().hex[:6]}."
    settings = replace(Settings(), kafka_bootstrap=kafka_bootstrap, topic_prefix=prefix,
                       kafka_session_timeout_ms=2000, handler_retries=2)
    kafka.create_topics(settings)
    producer = kafka.make_producer(settings)
    for rid in ("r1", "boom2", "r3"):
        kafka.produce(producer, settings.topic("reserved"), to_kafka(reserved(rid, "fine")))
    kafka.flush(producer)

    ports = Fragile()
    worker = KafkaWorker(fragile_step(infer_poison),
                         replace(settings, consumer_group_prefix=prefix), ports)
    worker.consumer.subscribe([settings.topic("reserved")])
    handled = 0
    deadline = time.monotonic() + 30
    while handled < 3 and time.monotonic() < deadline:
        handled += worker.poll_once(0.5)
    worker.consumer.close()
    assert handled == 3

    outputs = [from_kafka(m.headers(), m.key(), m.value()).payload
               for m in drain(kafka_bootstrap, settings.topic("failed"), 3)]
    by_id = {p.request_id: p.reason for p in outputs if isinstance(p, Failed)}
    assert by_id["r1"] == by_id["r3"] == "fine"
    assert by_id["boom2"] == "handler_error"  # the client's record: the text is in the log
    dead = drain(kafka_bootstrap, settings.topic("reserved") + ".dlq", 1)
    assert len(dead) == 1
    headers = dict(dead[0].headers() or [])
    assert headers["ce_id"] == b"boom2/reserved"
    reason = headers["qf_dlq_reason"]
    assert isinstance(reason, bytes) and b"model exploded" in reason
    # Tried in its batch, then alone handler_retries times, then given up: not forever.
    assert sum("boom2" in call for call in ports.calls) == 1 + 2


def test_a_batch_polled_while_another_is_handled_goes_out_first_and_its_offset_waits(
        kafka_bootstrap: str) -> None:
    """infer's continuous batching on a real broker: the loop keeps polling while a batch is
    handled, the later batch's output is published first, and the partition's committed
    offset stays before the unfinished batch until it finishes."""
    prefix = f"w{uuid.uuid4().hex[:6]}."
    settings = replace(Settings(), kafka_bootstrap=kafka_bootstrap, topic_prefix=prefix,
                       consumer_group_prefix=prefix, kafka_session_timeout_ms=2000)
    kafka.create_topics(settings)
    topic = settings.topic("reserved")
    producer = Producer(kafka.client_config(settings))
    for rid in ("slow", "fast"):
        message = to_kafka(reserved(rid, "fine"))
        producer.produce(topic, value=message.value, key=message.key,
                         headers=list(message.headers.items()), partition=0)
    producer.flush(10)

    release = threading.Event()

    def handle(payloads: Sequence[Reserved], _ports: object) -> list[Failed]:
        if payloads[0].request_id == "slow":
            assert release.wait(30)
        return [Failed(p.request_id, p.tenant, p.reserved_tokens, "fine") for p in payloads]

    step: Step[Reserved, object] = Step(
        name="infer", consumes=("reserved",), produces=("failed",), handle=handle,
        in_flight=lambda s: 2)  # each record a handler call of its own, even polled together
    worker = KafkaWorker(step, settings, ports=object())
    worker.consumer.subscribe([topic])

    def committed() -> int:
        (tp,) = worker.consumer.committed([TopicPartition(topic, 0)], timeout=5)
        return tp.offset

    handled = 0
    deadline = time.monotonic() + 30
    while handled < 1 and time.monotonic() < deadline:
        handled += worker.poll_once(0.5)
    (out,) = drain(kafka_bootstrap, settings.topic("failed"), 1)
    assert from_kafka(out.headers(), out.key(), out.value()).payload.request_id == "fast"
    assert committed() < 1  # "slow" at offset 0 is not done: nothing may be committed

    release.set()
    while (handled < 2 or committed() != 2) and time.monotonic() < deadline:
        handled += worker.poll_once(0.2)
    final = committed()
    worker.consumer.close()
    assert (handled, final) == (2, 2)


def reserved_topic_holding(kafka_bootstrap: str, n: int) -> Settings:
    """Settings with topics of their own, whose `reserved` topic holds r0..r{n-1} in one
    partition (one tenant)."""
    prefix = f"g{uuid.uuid4().hex[:6]}."
    settings = replace(Settings(), kafka_bootstrap=kafka_bootstrap, topic_prefix=prefix,
                       kafka_session_timeout_ms=2000, consumer_group_prefix=prefix)
    kafka.create_topics(settings)
    producer = kafka.make_producer(settings)
    for i in range(n):
        kafka.produce(producer, settings.topic("reserved"), to_kafka(reserved(f"r{i}", "fine")))
    kafka.flush(producer)
    return settings


def test_records_a_fetch_skipped_are_read_again_once_each_and_in_order(
        kafka_bootstrap: str) -> None:
    """To the consumer a fetch that skipped a batch (the local broker's race, BENCHMARKS.md)
    looks like its position jumping ahead: here the position is moved ahead by hand, past
    three records, and the loop reads them again."""
    settings = reserved_topic_holding(kafka_bootstrap, 10)
    ports = Fragile()
    worker = KafkaWorker(replace(fragile_step(), batch_max=lambda _s: 3), settings, ports)
    worker.consumer.subscribe([settings.topic("reserved")])
    handled, deadline = 0, time.monotonic() + 30
    while handled < 3 and time.monotonic() < deadline:
        handled += worker.poll_once(0.5)
    assert handled == 3
    (at,) = [tp for tp in worker.consumer.position(worker.consumer.assignment())
             if tp.offset == 3]
    worker.consumer.seek(TopicPartition(at.topic, at.partition, 6))  # r3..r5 "skipped"
    while handled < 10 and time.monotonic() < deadline:
        handled += worker.poll_once(0.5)
    worker.consumer.close()
    assert [rid for call in ports.calls for rid in call] == [f"r{i}" for i in range(10)]


def test_records_skipped_by_the_first_fetch_after_an_assignment_are_read_again(
        kafka_bootstrap: str) -> None:
    """Where a partition starts is read from the broker at the assignment (the group's
    committed offset): here the group committed 2, and the assignment is moved to 5 by hand,
    as a first fetch that skipped r2..r4 would look; the loop reads them again."""
    settings = reserved_topic_holding(kafka_bootstrap, 8)
    (first,) = drain(kafka_bootstrap, settings.topic("reserved"), 1)[:1]
    step = replace(fragile_step(), batch_max=lambda _s: 3)
    ports = Fragile()
    worker = KafkaWorker(step, settings, ports)
    worker.consumer.commit(offsets=[TopicPartition(first.topic(), first.partition(), 2)],
                           asynchronous=False)

    def assigned(consumer: Consumer, partitions: list[TopicPartition]) -> None:
        worker._assigned(consumer, partitions)  # cooperative: the increment, assigned here
        consumer.incremental_assign([TopicPartition(p.topic, p.partition, 5)
                                     for p in partitions])

    worker.consumer.subscribe([settings.topic("reserved")], on_assign=assigned)
    handled, deadline = 0, time.monotonic() + 30
    while handled < 6 and time.monotonic() < deadline:
        handled += worker.poll_once(0.5)
    worker.consumer.close()
    assert [rid for call in ports.calls for rid in call] == [f"r{i}" for i in range(2, 8)]
