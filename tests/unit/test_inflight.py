"""Batches handled at once (infer's continuous batching): outputs go out as each batch
finishes, but offsets are committed only for the leading batches that are all published, so a
crash redelivers every batch whose outputs might be missing."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from quotaflow.events.payloads import Failed, Payload
from quotaflow.runtime.inflight import InFlight, batch_offsets
from tests.unit.test_worker import FakeMessage


def gated(release: threading.Event, outputs: list[Payload]) -> Any:
    def handle() -> list[Payload]:
        assert release.wait(10)
        return outputs
    return handle


def failed(rid: str) -> Failed:
    return Failed(rid, "t", 1, "fine")


def until_finished(flight: InFlight, n: int) -> None:
    """Wait (at most 10 s) until `n` batches have finished and wait to be published."""
    for _ in range(100):
        if len(flight.finished()) >= n:
            return
        flight.wait(0.1)
    raise AssertionError(f"{len(flight.finished())} batches finished, not {n}")


def publish_finished(flight: InFlight) -> list[str]:
    ids = []
    for polled in flight.finished():
        ids += [p.request_id for p in polled.outputs.result()]
        polled.published = True
    return ids


def test_a_later_batch_publishes_first_but_commits_only_after_the_earlier_one() -> None:
    flight = InFlight(3, "test")
    first, second = threading.Event(), threading.Event()
    flight.submit([FakeMessage("r", 0, 10)], 1, gated(first, [failed("a")]))  # type: ignore[list-item]
    flight.submit([FakeMessage("r", 0, 11)], 1, gated(second, [failed("b")]))  # type: ignore[list-item]
    assert not flight.full()

    second.set()
    flight.wait(10)
    assert publish_finished(flight) == ["b"]
    assert flight.committable() == []  # offset 11 done, but 10 is not: commit nothing yet

    first.set()
    flight.wait(10)
    assert publish_finished(flight) == ["a"]
    done = batch_offsets(flight.committable())
    assert [(tp.partition, tp.offset) for tp in done] == [(0, 12)]
    assert len(flight) == 0
    flight.close()


def test_the_limit_counts_batches_not_yet_committed() -> None:
    flight = InFlight(2, "test")
    go = threading.Event()
    for offset in (1, 2):
        flight.submit([FakeMessage("r", 0, offset)], 1, gated(go, []))  # type: ignore[list-item]
    assert flight.full()
    go.set()
    flight.wait(10)
    flight.wait(10)
    publish_finished(flight)
    assert [m.offset() for m in flight.committable()] == [1, 2]
    assert not flight.full()
    flight.close()


def test_abandoning_waits_for_every_handler_and_answers_all_records_to_read_again() -> None:
    flight = InFlight(2, "test")
    go = threading.Event()
    flight.submit([FakeMessage("r", 0, 5)], 1, gated(go, []))  # type: ignore[list-item]
    flight.submit([FakeMessage("r", 1, 8)], 1, gated(go, []))  # type: ignore[list-item]
    threading.Timer(0.05, go.set).start()
    assert sorted(m.offset() for m in flight.abandon()) == [5, 8]
    assert len(flight) == 0 and flight.committable() == []
    flight.close()


def test_with_a_limit_of_one_the_handler_runs_inline_and_its_error_is_kept() -> None:
    flight = InFlight(1, "test")
    caller = threading.current_thread()

    def handle() -> list[Payload]:
        assert threading.current_thread() is caller
        raise RuntimeError("model exploded")

    flight.submit([FakeMessage("r", 0, 1)], 1, handle)  # type: ignore[list-item]
    (polled,) = flight.finished()
    with pytest.raises(RuntimeError, match="model exploded"):
        polled.outputs.result()


def test_finished_batches_waiting_behind_a_longer_one_leave_room_for_new_ones() -> None:
    """A long generation at the head must not keep the requests behind it from joining."""
    flight = InFlight(2, "test")
    long, short = threading.Event(), threading.Event()
    flight.submit([FakeMessage("r", 0, 1)], 1, gated(long, []))  # type: ignore[list-item]
    flight.submit([FakeMessage("r", 0, 2)], 1, gated(short, []))  # type: ignore[list-item]
    assert flight.full()
    short.set()
    flight.wait(10)
    publish_finished(flight)
    assert flight.committable() == [] and len(flight) == 2
    assert not flight.full()  # one handler running: room for another
    long.set()
    flight.close()


def test_a_long_batch_holds_back_only_its_own_partitions_commits() -> None:
    """A crash then redelivers what follows the long generation in its partition, not in
    every partition."""
    flight = InFlight(4, "test")
    long, short = threading.Event(), threading.Event()
    flight.submit([FakeMessage("r", 0, 10)], 1, gated(long, [failed("a")]))  # type: ignore[list-item]
    flight.submit([FakeMessage("r", 0, 11)], 1, gated(short, [failed("b")]))  # type: ignore[list-item]
    flight.submit([FakeMessage("r", 1, 7)], 1, gated(short, [failed("c")]))  # type: ignore[list-item]
    short.set()
    until_finished(flight, 2)
    assert sorted(publish_finished(flight)) == ["b", "c"]
    done = batch_offsets(flight.committable())
    assert [(tp.partition, tp.offset) for tp in done] == [(1, 8)]  # partition 0 waits for 10
    assert len(flight) == 2

    long.set()
    until_finished(flight, 1)
    assert publish_finished(flight) == ["a"]
    done = batch_offsets(flight.committable())
    assert [(tp.partition, tp.offset) for tp in done] == [(0, 12)]
    assert len(flight) == 0
    flight.close()


def test_a_batch_over_two_partitions_waits_for_each_and_holds_both_back() -> None:
    flight = InFlight(4, "test")
    long, rest = threading.Event(), threading.Event()
    flight.submit([FakeMessage("r", 0, 1)], 1, gated(long, []))  # type: ignore[list-item]
    flight.submit([FakeMessage("r", 0, 2), FakeMessage("r", 1, 5)], 2,  # type: ignore[list-item]
                  gated(rest, []))
    flight.submit([FakeMessage("r", 1, 6)], 1, gated(rest, []))  # type: ignore[list-item]
    rest.set()
    until_finished(flight, 2)
    publish_finished(flight)
    assert flight.committable() == []  # partition 1's offset 6 follows 5, held with 2
    long.set()
    until_finished(flight, 1)
    publish_finished(flight)
    done = batch_offsets(flight.committable())
    assert [(tp.partition, tp.offset) for tp in done] == [(0, 3), (1, 7)]
    flight.close()
