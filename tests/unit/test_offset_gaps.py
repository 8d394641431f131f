"""A fetch that skipped records (Tansu, produce racing a fetch: BENCHMARKS.md) is read again:
offsets in our partitions are contiguous, so a record past the next offset expected makes the
loop seek back, and every record is handled once, in order, instead of its request waiting a
minute for the reconciler."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_INVALID,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from quotaflow.adapters import kafka
from quotaflow.analytics.consumer import AnalyticsConsumer
from quotaflow.analytics.memory import MemoryUsageStore
from quotaflow.events.envelope import to_kafka
from quotaflow.events.payloads import Completed
from quotaflow.runtime.gaps import GapGuard, first_offsets
from quotaflow.runtime.worker import KafkaWorker
from quotaflow.settings import Settings
from tests.unit.fakes import reserved
from tests.unit.runtime_fakes import FakeProducer, Fragile, fragile_step, upstream
from tests.unit.test_worker import FakeMessage


def offsets(msgs: list[Any]) -> list[tuple[int, int]]:
    return [(m.partition(), m.offset()) for m in msgs]


def test_a_gap_is_sought_back_and_what_came_after_it_in_that_partition_is_left_out() -> None:
    guard = GapGuard("s")
    keep, seeks = guard.screen([FakeMessage("t", 0, 0), FakeMessage("t", 0, 1),  # type: ignore[list-item]
                                FakeMessage("t", 1, 7), FakeMessage("t", 0, 3),
                                FakeMessage("t", 0, 4), FakeMessage("t", 1, 8)])
    assert offsets(keep) == [(0, 0), (0, 1), (1, 7), (1, 8)]
    assert [(tp.partition, tp.offset) for tp in seeks] == [(0, 2)]
    # read again from 2: taken, and the partition goes on from there
    keep, seeks = guard.screen([FakeMessage("t", 0, 2), FakeMessage("t", 0, 3)])  # type: ignore[list-item]
    assert offsets(keep) == [(0, 2), (0, 3)] and seeks == []


def test_a_rewind_or_redelivery_is_not_a_gap() -> None:
    guard = GapGuard("s")
    guard.screen([FakeMessage("t", 0, 5), FakeMessage("t", 0, 6)])  # type: ignore[list-item]
    keep, seeks = guard.screen([FakeMessage("t", 0, 5), FakeMessage("t", 0, 6)])  # type: ignore[list-item]
    assert offsets(keep) == [(0, 5), (0, 6)] and seeks == []


def test_the_first_record_after_an_assignment_sets_where_the_partition_is() -> None:
    guard = GapGuard("s")
    guard.screen([FakeMessage("t", 0, 5)])  # type: ignore[list-item]
    guard.forget([TopicPartition("t", 0)])
    keep, seeks = guard.screen([FakeMessage("t", 0, 40)])  # type: ignore[list-item]
    assert offsets(keep) == [(0, 40)] and seeks == []


def test_where_an_assignment_starts_is_expected_so_a_skipped_start_is_read_again() -> None:
    guard = GapGuard("s")
    guard.expect([TopicPartition("t", 0, 2), TopicPartition("t", 1, OFFSET_INVALID)])
    keep, seeks = guard.screen([FakeMessage("t", 0, 5), FakeMessage("t", 1, 9)])  # type: ignore[list-item]
    assert offsets(keep) == [(1, 9)]
    assert [(tp.partition, tp.offset) for tp in seeks] == [(0, 2)]


class Offsets:
    """A consumer's view of where partitions stand: committed offsets and each log's start."""

    def __init__(self, committed: dict[int, int], starts: dict[int, int],
                 down: bool = False) -> None:
        self.committed_at, self.starts, self.down = committed, starts, down

    def committed(self, partitions: list[TopicPartition],
                  timeout: float) -> list[TopicPartition]:
        if self.down:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT))
        return [TopicPartition(p.topic, p.partition,
                               self.committed_at.get(p.partition, OFFSET_INVALID))
                for p in partitions]

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float,
                              cached: bool) -> tuple[int, int]:
        return self.starts.get(tp.partition, 0), 100


def test_a_partition_starts_at_its_offset_or_its_commit_or_its_logs_start() -> None:
    consumer = Offsets(committed={0: 7, 2: 1}, starts={2: 4, 3: 5})
    assigned = [TopicPartition("t", 0), TopicPartition("t", 1), TopicPartition("t", 2),
                TopicPartition("t", 3, 12), TopicPartition("t", 4, OFFSET_BEGINNING)]
    firsts = first_offsets(consumer, assigned)  # type: ignore[arg-type]
    # committed 7; nothing committed: the log's start; committed below the start (deleted
    # records): the start; assigned at 12; assigned at the beginning: the start
    assert [(tp.partition, tp.offset) for tp in firsts] == [(0, 7), (1, 0), (2, 4), (3, 12),
                                                            (4, 0)]
    assert first_offsets(Offsets({}, {}, down=True), assigned) == []  # type: ignore[arg-type]


def test_a_gap_is_read_again_until_it_fills_or_is_given_up_after_a_while() -> None:
    now = [0.0]
    guard = GapGuard("s", give_up_s=2.0, clock=lambda: now[0])
    guard.screen([FakeMessage("t", 0, 1)])  # type: ignore[list-item]
    for at in (0.0, 0.5, 1.9):  # stored a moment after the watermark moved: not yet
        now[0] = at
        keep, seeks = guard.screen([FakeMessage("t", 0, 9)])  # type: ignore[list-item]
        assert keep == [] and [tp.offset for tp in seeks] == [2]
    now[0] = 2.1
    keep, seeks = guard.screen([FakeMessage("t", 0, 9)])  # type: ignore[list-item]
    assert offsets(keep) == [(0, 9)] and seeks == []  # lost here: the reconciler re-drives
    # a later gap gets its own time
    keep, seeks = guard.screen([FakeMessage("t", 0, 12)])  # type: ignore[list-item]
    assert keep == [] and [tp.offset for tp in seeks] == [10]


@dataclass
class Record(FakeMessage):
    """A polled record with the event a previous step published."""

    headers_: list[tuple[str, bytes]] = field(default_factory=list)
    key_: bytes | None = None
    value_: bytes = b""

    def headers(self) -> list[tuple[str, bytes]]:
        return self.headers_

    def key(self) -> bytes | None:
        return self.key_

    def value(self) -> bytes:
        return self.value_


@dataclass
class SkippingConsumer:
    """A partition holding offsets 0..n-1 whose first fetch skips offset `skipped` (as Tansu's
    can); fetches after a seek see every record."""

    records: list[Record]
    skipped: int
    position: int = 0
    fetched_once: bool = False
    seeks: list[int] = field(default_factory=list)
    commits: list[int] = field(default_factory=list)

    def _next(self) -> Record | None:
        if self.position >= len(self.records):
            return None
        if not self.fetched_once and self.position == self.skipped:
            self.position += 1  # the broker's answer left this batch out
        record = self.records[self.position]
        self.position += 1
        return record

    def poll(self, timeout: float) -> Record | None:
        return self._next()

    def consume(self, num_messages: int, timeout: float) -> list[Record]:
        out = [r for r in (self._next() for _ in range(num_messages)) if r is not None]
        self.fetched_once = self.fetched_once or self.position >= len(self.records)
        return out

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append(tp.offset)
        self.position, self.fetched_once = tp.offset, True

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.commits += [tp.offset for tp in offsets]


def test_the_loop_reads_a_skipped_record_again_and_handles_every_record_once_in_order(
        monkeypatch: pytest.MonkeyPatch) -> None:
    records = []
    for i in range(6):
        message = to_kafka(upstream(reserved(f"r{i}", "acme", 6)))
        records.append(Record("t.reserved", 0, i, headers_=list(message.headers.items()),
                              key_=message.key, value_=message.value))
    consumer = SkippingConsumer(records, skipped=2)
    monkeypatch.setattr(kafka, "make_producer", lambda _settings: FakeProducer())
    monkeypatch.setattr(kafka, "make_consumer", lambda _settings, _group: consumer)
    ports = Fragile()
    worker = KafkaWorker(fragile_step(), replace(Settings(), topic_prefix="t."), ports)
    for _ in range(4):
        worker.poll_once(0.01)
    assert consumer.seeks == [2]
    handled = [rid for call in ports.calls for rid in call]
    assert handled == [f"r{i}" for i in range(6)]
    assert max(consumer.commits) == 6


@dataclass
class SkippingSubscriber(SkippingConsumer):
    """The analytics consumer's view: subscribe and assign as well."""

    def subscribe(self, topics: list[str], on_assign: Any = None) -> None:
        pass

    def assign(self, partitions: list[TopicPartition]) -> None:
        pass


def test_the_usage_roll_ups_read_a_skipped_record_again_and_count_every_request(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """analytics has no reconciler behind it: a skipped record would be missing for good."""
    records = []
    for i in range(6):
        message = to_kafka(upstream(Completed(f"r{i}", "acme", 20, "hi", 5, 3, "m", "v1", 9.0)))
        records.append(Record("t.completed", 0, i, headers_=list(message.headers.items()),
                              key_=message.key, value_=message.value))
    consumer = SkippingSubscriber(records, skipped=3)
    monkeypatch.setattr(kafka, "make_consumer", lambda _settings, _group, **_kw: consumer)
    store = MemoryUsageStore({f"r{i}": ("m", "k1") for i in range(6)})
    rollups = AnalyticsConsumer(replace(Settings(), topic_prefix="t."), store, batch_max=4)
    for _ in range(4):
        rollups.poll_once()
    assert consumer.seeks == [3]
    assert {rid for rid, _ in store.outcomes} == {f"r{i}" for i in range(6)}
    # The stored offsets copied to Kafka after each applied batch, for KEDA's lag.
    assert consumer.commits[-1] == 6 and consumer.commits == sorted(consumer.commits)
