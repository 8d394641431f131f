"""The local KafkaSource's loop outlives a failed commit (its group moved on while it was
delivering, as on a loaded machine): the record is delivered again, never skipped, and the loop
goes on with the next one. Fake consumer and function: no Kafka, no HTTP."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from quotaflow.adapters import kafka
from quotaflow.devstack import knative_mode
from quotaflow.devstack.kafka_source import Answer, load_sources
from quotaflow.settings import Settings


@dataclass
class Record:
    at: int

    def topic(self) -> str:
        return "quotaflow.reserved"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self.at

    def error(self) -> None:
        return None

    def headers(self) -> list[tuple[str, bytes]]:
        return [("ce_id", f"r{self.at}".encode())]

    def value(self) -> bytes:
        return b"body"

    def key(self) -> bytes:
        return b"tenant"


@dataclass
class Consumer:
    """Offsets 0..2 of one partition; the first commit fails as after a lapsed session."""

    stop: threading.Event
    position: int = 0
    committed: list[int] = field(default_factory=list)
    failures: int = 1

    def subscribe(self, topics: list[str], on_assign: Any = None) -> None:
        pass

    def poll(self, timeout: float) -> Record | None:
        if self.position > 2:
            self.stop.set()
            return None
        self.position += 1
        return Record(self.position - 1)

    def commit(self, message: Record, asynchronous: bool) -> None:
        if self.failures:
            self.failures -= 1
            raise KafkaException(KafkaError(KafkaError.UNKNOWN_MEMBER_ID))
        self.committed.append(message.offset())

    def seek(self, partition: TopicPartition) -> None:
        self.position = partition.offset

    def close(self) -> None:
        pass


class Function:
    url = "http://127.0.0.1:1"

    def __init__(self) -> None:
        self.posted: list[dict[str, str]] = []

    def acquire(self) -> None:
        pass

    def release(self) -> None:
        pass

    def post(self, headers: dict[str, str], body: bytes) -> Answer:
        self.posted.append(headers)
        return Answer(200, b"")


def test_a_failed_commit_delivers_its_record_again_and_the_loop_goes_on(
        monkeypatch: pytest.MonkeyPatch) -> None:
    stop = threading.Event()
    consumer = Consumer(stop)
    monkeypatch.setattr(kafka, "make_consumer", lambda *_a, **_k: consumer)
    monkeypatch.setattr(kafka, "make_producer", lambda *_a, **_k: object())
    fn = Function()
    loop = knative_mode.SourceLoop(load_sources()[0], fn, Settings())  # type: ignore[arg-type]
    loop.run(stop)
    assert [h["ce-id"] for h in fn.posted] == ["r0", "r0", "r1", "r2"]
    assert consumer.committed == [0, 1, 2]
