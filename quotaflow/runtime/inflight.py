"""The batches a consumer loop has polled and not yet committed, and the offsets they free.

A step may handle several records at once, each in a handler call of its own (`Step.in_flight`;
infer does, so requests polled while the model decodes join its running batch, and each
completion goes out the moment its own request ends). Their outputs are published as each
batch finishes, in any order, but in each partition offsets are committed only up to the first
batch not yet published: a crash then redelivers every batch whose outputs might be missing,
and a long generation holds back its own partition's commits only, not the others'.
Redelivery is harmless, since output ids derive from the request id and every consumer is
idempotent by it. With a limit of 1 a batch is handled inline, on the loop's own
thread, exactly as before there was a limit."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from confluent_kafka import Message, TopicPartition

from quotaflow.events.payloads import Payload


def _spans(msgs: Sequence[Message]) -> dict[tuple[str, int], tuple[int, int]]:
    """Per partition, the first and the last offset of `msgs` (records in error left out)."""
    spans: dict[tuple[str, int], tuple[int, int]] = {}
    for msg in msgs:
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        if msg.error() is None and topic is not None and partition is not None \
                and offset is not None:
            low, high = spans.get((topic, partition), (offset, offset))
            spans[(topic, partition)] = (min(low, offset), max(high, offset))
    return spans


def rewind_offsets(msgs: Sequence[Message]) -> list[TopicPartition]:
    """Where to seek to read `msgs` again: per partition, its first record's offset."""
    return [TopicPartition(t, p, low) for (t, p), (low, _) in sorted(_spans(msgs).items())]


def batch_offsets(msgs: Sequence[Message]) -> list[TopicPartition]:
    """The offsets to commit once `msgs` are handled: per partition, one past the last."""
    return [TopicPartition(t, p, high + 1) for (t, p), (_, high) in sorted(_spans(msgs).items())]


# How many polled batches, per handler slot, may wait to be committed (bounds the memory held
# and what a crash makes the step handle again).
UNCOMMITTED_PER_SLOT = 8


@dataclass(eq=False)
class Polled:
    """One polled batch: its records and the handler's outputs to come."""

    msgs: list[Message]
    records: int  # how many of msgs went to the handler (the rest were dead-lettered)
    outputs: Future[list[Payload]] = field(default_factory=Future)
    published: bool = False


class InFlight:
    def __init__(self, limit: int, name: str) -> None:
        self.limit = max(1, limit)
        self._batches: deque[Polled] = deque()
        self._pool = (ThreadPoolExecutor(self.limit, thread_name_prefix=name)
                      if self.limit > 1 else None)

    def __len__(self) -> int:
        return len(self._batches)

    def free(self) -> int:
        """Handler slots not in use."""
        return max(0, self.limit - sum(1 for b in self._batches if not b.outputs.done()))

    def full(self) -> bool:
        """`limit` handlers are running, or too many finished batches wait behind an earlier,
        longer one to be committed. Finished batches do not count against `limit`: a long
        generation at the head must not keep the requests behind it from joining the batch."""
        return self.free() == 0 or len(self._batches) >= self.limit * UNCOMMITTED_PER_SLOT

    def submit(self, msgs: list[Message], records: int,
               handle: Callable[[], list[Payload]]) -> None:
        polled = Polled(msgs, records)
        if self._pool is not None:
            polled.outputs = self._pool.submit(handle)
        else:
            try:
                polled.outputs.set_result(handle())
            except Exception as exc:
                polled.outputs.set_exception(exc)
        self._batches.append(polled)

    def wait(self, timeout_s: float | None) -> None:
        """Until one more batch finishes (or all are, or the timeout passes)."""
        running = [b.outputs for b in self._batches if not b.outputs.done()]
        if running:
            wait(running, timeout_s, return_when=FIRST_COMPLETED)

    def finished(self) -> list[Polled]:
        """Batches whose handler has returned (or raised) and whose outputs are unpublished."""
        return [b for b in self._batches if b.outputs.done() and not b.published]

    def committable(self) -> list[Message]:
        """Remove and answer the records of the published batches that no batch still held
        precedes in any of their partitions: per partition, a prefix in poll order (so the
        offset one past its last record is safe to commit)."""
        msgs: list[Message] = []
        held: deque[Polled] = deque()
        blocked: set[tuple[str | None, int | None]] = set()
        for polled in self._batches:
            partitions = {(m.topic(), m.partition()) for m in polled.msgs}
            if polled.published and blocked.isdisjoint(partitions):
                msgs += polled.msgs
            else:  # everything after it in these partitions waits for it
                held.append(polled)
                blocked |= partitions
        self._batches = held
        return msgs

    def abandon(self) -> list[Message]:
        """Wait for every handler, forget every batch, and answer all their records (to be
        read again: nothing of theirs is committed)."""
        batches, self._batches = list(self._batches), deque()
        wait([b.outputs for b in batches])
        return [m for b in batches for m in b.msgs]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
