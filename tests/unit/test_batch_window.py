"""The consumer loop's batching window (`take_more`): an idle step does not wait it, a busy one
still fills its batch within it."""

from __future__ import annotations

from typing import Any

from quotaflow.runtime.worker import take_more


class Queue:
    """A consumer's local queue: `ready` records now, `arriving` more only to a caller who waits."""

    def __init__(self, ready: int, arriving: int) -> None:
        self.ready, self.arriving = ready, arriving
        self.waits: list[float] = []

    def consume(self, n: int, timeout: float) -> list[Any]:
        self.waits.append(timeout)
        take = min(n, self.ready + (self.arriving if timeout > 0 else 0))
        from_ready = min(take, self.ready)
        self.ready -= from_ready
        self.arriving -= take - from_ready
        return [object()] * take


def test_an_idle_step_hands_its_one_record_on_without_waiting_the_window() -> None:
    q = Queue(ready=0, arriving=3)
    assert take_more(q.consume, room=7, window_s=0.005) == []
    assert q.waits == [0]


def test_a_busy_step_takes_what_is_queued_then_what_arrives_within_the_window() -> None:
    q = Queue(ready=2, arriving=3)
    assert len(take_more(q.consume, room=7, window_s=0.005)) == 5
    assert q.waits == [0, 0.005]


def test_a_batch_full_from_the_queue_does_not_wait() -> None:
    q = Queue(ready=9, arriving=3)
    assert len(take_more(q.consume, room=7, window_s=0.005)) == 7
    assert q.waits == [0]


def test_no_room_takes_nothing() -> None:
    q = Queue(ready=4, arriving=0)
    assert take_more(q.consume, room=0, window_s=0.005) == []
    assert q.waits == []
