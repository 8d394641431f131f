"""The Kafka loop on a real broker: a record that fails every retry goes to the dead-letter
topic with the reason, its poison output (infer's `failed`, which releases the reservation)
is produced, and the rest of the batch goes on; offsets are committed after the outputs."""

from __future__ import annotations

import time
import uuid
from dataclasses import replace

from confluent_kafka import Consumer, Message

from events.envelope import Envelope, from_kafka, to_kafka
from events.payloads import Failed, Reserved
from functions.infer.handler import on_poison as infer_poison
from quotaflow.adapters import kafka
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
    assert by_id["boom2"].startswith("handler_error: RuntimeError: model exploded")
    dead = drain(kafka_bootstrap, settings.topic("reserved") + ".dlq", 1)
    assert len(dead) == 1
    headers = dict(dead[0].headers() or [])
    assert headers["ce_id"] == b"boom2/reserved"
    reason = headers["qf_dlq_reason"]
    assert isinstance(reason, bytes) and b"model exploded" in reason
    # Tried in its batch, then alone handler_retries times, then given up: not forever.
    assert sum("boom2" in call for call in ports.calls) == 1 + 2
