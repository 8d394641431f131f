"""Records a fetch skipped, read again.

Our topics are never compacted and no producer is transactional, so a partition's offsets are
contiguous: a polled record past the next offset expected means the broker answered a fetch
without a batch it had already acknowledged. Tansu 0.6 does that under concurrent produce: it
raises a partition's high watermark before it stores the batch, and a fetch in between lists
the batches stored so far, so it can return a later batch and skip the one still being stored
(`produce` and `fetch` in its `tansu-storage/src/dynostore.rs`). Without this guard the consumer
moves past the skipped records for good, and their requests wait for the reconciler's re-drive
(a minute and more).

So a gap makes the loop seek back to the first missing offset and drop what it polled past it
in that partition: the next fetch returns the skipped batch, now stored, and what follows it.
The batch is stored a moment after the watermark moved, so a re-read can come too early and
see the same gap: it is read again until `GIVE_UP_S` after the gap was first seen, then given
up (logged as an error and counted): those records are lost to this consumer, and the
reconciler re-drives their requests.

Where a partition starts is known before its first record arrives (`first_offsets`, at each
assignment): its committed offset, or the log's start. So a fetch that skips records at the
very start is caught as well."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

from quotaflow.runtime.metrics import OFFSET_GAPS

log = logging.getLogger(__name__)

GIVE_UP_S = 2.0

Partition = tuple[str, int]


class GapGuard:
    """The next offset expected in each partition this consumer reads."""

    def __init__(self, step: str, give_up_s: float = GIVE_UP_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.step = step
        self.give_up_s = give_up_s
        self.clock = clock
        self._next: dict[Partition, int] = {}
        self._gaps: dict[Partition, tuple[int, float]] = {}  # first missing offset, seen at

    def screen(self, msgs: Sequence[Message]) -> tuple[list[Message], list[TopicPartition]]:
        """The polled records to handle, and where to seek to read skipped ones again: for a
        partition with a gap, its records from the gap on are left out (read again after the
        seek). A record at or before the offset expected (a rewind, a redelivery) is taken."""
        keep: list[Message] = []
        seeks: list[TopicPartition] = []
        cut: set[Partition] = set()
        for msg in msgs:
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            if msg.error() is not None or topic is None or partition is None or offset is None:
                keep.append(msg)
                continue
            tp = (topic, partition)
            if tp in cut:
                continue
            expected = self._next.get(tp)
            if expected is not None and offset > expected and self._read_again(tp, expected,
                                                                               offset):
                seeks.append(TopicPartition(topic, partition, expected))
                cut.add(tp)
                continue
            self._gaps.pop(tp, None)
            self._next[tp] = offset + 1
            keep.append(msg)
        return keep, seeks

    def _read_again(self, tp: Partition, expected: int, offset: int) -> bool:
        """Whether to seek back for the gap before `offset`; False once it is given up."""
        now = self.clock()
        first, seen = self._gaps.get(tp, (None, now))
        if first != expected:  # a new gap: say so once, however many re-reads it takes
            seen = now
            self._gaps[tp] = (expected, now)
            log.warning("step %s: %s[%s] jumped from offset %d to %d; reading again from %d",
                        self.step, tp[0], tp[1], expected, offset, expected)
        if now - seen < self.give_up_s:
            OFFSET_GAPS.labels(self.step, "reread").inc()
            return True
        OFFSET_GAPS.labels(self.step, "skipped").inc()
        log.error("step %s: %s[%s] offsets %d to %d never arrived in %.1f s of re-reads; their "
                  "requests are left to the reconciler", self.step, tp[0], tp[1], expected,
                  offset - 1, self.give_up_s)
        return False

    def expect(self, partitions: Iterable[TopicPartition]) -> None:
        """Each partition's first record will be at its `offset` (one below 0: not known)."""
        for p in partitions:
            self._gaps.pop((p.topic, p.partition), None)
            if p.offset >= 0:
                self._next[(p.topic, p.partition)] = p.offset
            else:
                self._next.pop((p.topic, p.partition), None)

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Assigned or revoked: where the next record comes from is no longer known."""
        for p in partitions:
            self._next.pop((p.topic, p.partition), None)
            self._gaps.pop((p.topic, p.partition), None)


def first_offsets(consumer: Consumer, partitions: Sequence[TopicPartition],
                  timeout_s: float = 2.0) -> list[TopicPartition]:
    """The offset of the first record each assigned partition will give: the one it was
    assigned at, else the group's committed offset, else the log's start (both consumers read
    from the earliest record when there is no offset), and never below the log's start (records
    the broker deleted). Empty when the broker does not answer in time: the first record then
    sets where the partition is, as before."""
    try:
        unknown = [TopicPartition(p.topic, p.partition) for p in partitions
                   if p.offset < 0 and p.offset != OFFSET_BEGINNING]
        committed = {(c.topic, c.partition): c.offset
                     for c in (consumer.committed(unknown, timeout=timeout_s) if unknown else [])}
        firsts = []
        for p in partitions:
            at = p.offset if p.offset >= 0 else committed.get((p.topic, p.partition), -1)
            low, _ = consumer.get_watermark_offsets(TopicPartition(p.topic, p.partition),
                                                    timeout=timeout_s, cached=False)
            firsts.append(TopicPartition(p.topic, p.partition, max(at, low)))
        return firsts
    except KafkaException as exc:
        log.info("where the assigned partitions start is not known (%s): their first records "
                 "set it", exc)
        return []


def seek(consumer: Consumer, offsets: Iterable[TopicPartition], step: str) -> None:
    """Move each partition's position back to its offset (a gap to read again, a batch to
    retry); a partition no longer assigned is left to its new owner, which reads from the
    committed offset anyway."""
    for tp in offsets:
        try:
            consumer.seek(tp)
        except KafkaException as err:
            log.info("step %s: not seeking %s[%d] back to %d: %s", step, tp.topic,
                     tp.partition, tp.offset, err)
