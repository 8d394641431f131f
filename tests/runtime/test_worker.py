"""The Kafka loop on a real broker: a record that fails every retry goes to the dead-letter
topic with the reason, its poison output (infer's `failed`, which releases the reservation)
is produced, and the rest of the batch goes on; offsets are committed after the outputs."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from confluent_kafka import Consumer, Message

from events.catalog import EVENTS
from events.envelope import Event, from_kafka, to_kafka
from functions.infer.handler import on_poison as infer_poison
from quotaflow.adapters import kafka
from quotaflow.runtime.step import Step
from quotaflow.runtime.worker import KafkaWorker, batch_offsets
from quotaflow.settings import Settings


@dataclass
class Ports:
    poison_attempts: int = 0

    def ready(self) -> bool:
        return True

    def close(self) -> None:
        pass


def reserved(request_id: str, content: str) -> Event:
    return Event(type=EVENTS["reserved"], id=f"{request_id}/reserved", source="/test",
                 tenant="acme", data={
                     "request_id": request_id, "tenant": "acme", "key_id": "k", "model": "m",
                     "messages": [{"role": "user", "content": content}], "max_tokens": 4,
                     "temperature": None, "top_p": None, "seed": None,
                     "admitted_at_ms": datetime.now(UTC), "prompt_tokens": 2,
                     "reserved_tokens": 6, "period": "2026-11", "ledger_seq": 1})


def fragile_handle(events: Sequence[Event], ports: Ports) -> list[Event]:
    if any(e.data["messages"][0]["content"] == "boom" for e in events):
        ports.poison_attempts += 1
        raise RuntimeError("model exploded")
    return [replace(e, type=EVENTS["failed"], id=e.data["request_id"] + "/ok", data={
        "request_id": e.data["request_id"], "tenant": "acme", "reserved_tokens": 6,
        "reason": "fine"}) for e in events]


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
    step = Step(name="infer", consumes=("reserved",), produces=("completed", "failed"),
                handle=fragile_handle, make_ports=lambda s: Ports(),
                on_poison=infer_poison)  # type: ignore[arg-type]
    producer = kafka.make_producer(settings)
    for rid, content in (("r1", "fine"), ("r2", "boom"), ("r3", "fine")):
        kafka.produce(producer, settings.topic("reserved"), to_kafka(reserved(rid, content)))
    kafka.flush(producer)

    ports = Ports()
    worker = KafkaWorker(step, replace(settings, consumer_group_prefix=prefix), ports)
    worker.consumer.subscribe([settings.topic("reserved")])
    handled = 0
    deadline = time.monotonic() + 30
    while handled < 3 and time.monotonic() < deadline:
        handled += worker.poll_once(0.5)
    worker.consumer.close()
    assert handled == 3

    outputs = [from_kafka(m.headers(), m.key(), m.value())
               for m in drain(kafka_bootstrap, settings.topic("failed"), 3)]
    by_id = {e.data["request_id"]: e.data["reason"] for e in outputs}
    assert by_id["r1"] == by_id["r3"] == "fine"
    assert by_id["r2"].startswith("handler_error: RuntimeError: model exploded")
    dead = drain(kafka_bootstrap, settings.topic("reserved") + ".dlq", 1)
    assert len(dead) == 1
    headers = dict(dead[0].headers() or [])
    assert headers["ce_id"] == b"r2/reserved"
    assert b"model exploded" in headers["qf_dlq_reason"]
    # Tried in its batch, then alone handler_retries times, then given up: not forever.
    assert ports.poison_attempts == 1 + 2


@dataclass
class FakeMessage:
    """Only what batch_offsets reads of a confluent_kafka.Message."""

    t: str
    p: int
    o: int
    failed: bool = False

    def topic(self) -> str:
        return self.t

    def partition(self) -> int:
        return self.p

    def offset(self) -> int:
        return self.o

    def error(self) -> object:
        return "fetch error" if self.failed else None


def test_a_batch_commits_one_past_its_last_record_per_partition_and_nothing_else() -> None:
    msgs = [FakeMessage("a", 0, 7), FakeMessage("a", 1, 3), FakeMessage("a", 0, 9),
            FakeMessage("b", 0, 0), FakeMessage("a", 1, 99, failed=True)]
    done = batch_offsets(msgs)  # type: ignore[arg-type]
    assert [(tp.topic, tp.partition, tp.offset) for tp in done] == [
        ("a", 0, 10), ("a", 1, 4), ("b", 0, 1)]
