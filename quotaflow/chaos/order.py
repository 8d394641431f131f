"""Per-tenant order, read back from the topics and the ledger at the end of a chaos run.

What quotaflow promises a tenant (ARCHITECTURE.md: the record key is the tenant id), at any
number of members per group, while members join, leave or die:

1. On each topic, all of a tenant's records are on one partition, so whichever member holds
   that partition reads them in the order they were written, and a member taking it over
   goes on where the last committed offset left it.
2. The reserve step decides a tenant's requests in the order they were admitted: the tenant's
   TokensReserved and RequestRejected ledger events, by ledger sequence, come in the order of
   the requests' first records on `estimated`, and those in the order of their first records
   on `admitted` (estimate keeps its input's order).
3. The `ledger` topic carries a tenant's ledger events in ledger order.

A redelivery or a re-drive writes a request's record again later in its partition: its first
record fixes its place. A request the reconciler ends at its deadline without the reserve
step is not in (2)'s order (its RequestRejected has no record on `estimated`).
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence

from confluent_kafka import TopicPartition

from quotaflow.adapters import kafka
from quotaflow.chaos.facts import LedgerRow, TopicRecord
from quotaflow.events.envelope import from_kafka
from quotaflow.events.status import LedgerKind
from quotaflow.settings import Settings

# The topics read back: the two whose order (2) compares, and the ledger topic (3).
ORDERED = ("admitted", "estimated", "ledger")
DECISIONS = {LedgerKind.TOKENS_RESERVED, LedgerKind.REQUEST_REJECTED}


def first_seen(records: Iterable[TopicRecord], topic: str) -> dict[str, list[str]]:
    """Per tenant, its request ids in the order of their first record on `topic`."""
    out: dict[str, list[str]] = defaultdict(list)
    seen: set[str] = set()
    for r in sorted((r for r in records if r.topic == topic), key=lambda r: r.offset):
        if r.request_id and r.request_id not in seen:
            seen.add(r.request_id)
            out[r.tenant].append(r.request_id)
    return out


def _same_order(tenant: str, what: str, a: list[str], b: list[str]) -> list[str]:
    common = set(a) & set(b)
    a, b = [x for x in a if x in common], [x for x in b if x in common]
    if a == b:
        return []
    i = next(k for k, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)
    return [f"tenant {tenant}: {what} diverge at request {i + 1} of {len(a)}: {a[i]} vs {b[i]}"]


def find_order_breaks(records: Sequence[TopicRecord], ledger: Sequence[LedgerRow]) -> list[str]:
    """Every break of the promises above, as readable lines."""
    out = []
    partitions: dict[tuple[str, str], set[int]] = defaultdict(set)
    for r in records:
        partitions[(r.topic, r.tenant)].add(r.partition)
    out += [f"tenant {tenant}'s records on {topic} are on partitions {sorted(ps)}"
            for (topic, tenant), ps in sorted(partitions.items()) if len(ps) > 1]
    admitted, estimated = first_seen(records, "admitted"), first_seen(records, "estimated")
    decided: dict[str, list[str]] = defaultdict(list)
    for row in ledger:  # in sequence order
        if row.kind in DECISIONS and row.request_id:
            decided[row.tenant].append(row.request_id)
    for tenant in sorted(set(decided) | set(estimated)):
        out += _same_order(tenant, "ledger decisions and `estimated`",
                           decided[tenant], estimated.get(tenant, []))
        out += _same_order(tenant, "`estimated` and `admitted`", estimated.get(tenant, []),
                           admitted.get(tenant, []))
    on_topic: dict[str, list[int]] = defaultdict(list)
    for r in sorted((r for r in records if r.topic == "ledger"), key=lambda r: r.offset):
        if r.seq is not None and r.seq not in on_topic[r.tenant]:
            on_topic[r.tenant].append(r.seq)
    out += [f"tenant {tenant}'s ledger events are out of ledger order on the ledger topic"
            for tenant, seqs in sorted(on_topic.items()) if seqs != sorted(seqs)]
    return out


def read_records(settings: Settings, topics: Sequence[str] = ORDERED,
                 timeout_s: float = 60) -> list[TopicRecord]:
    """Every record now on `topics` (logical names), read from the start of each partition
    to its end as of the call."""
    consumer = kafka.make_consumer(settings, f"quotaflow-chaos-order-{uuid.uuid4().hex[:8]}",
                                   log_level=0)
    try:
        names = {settings.topic(t): t for t in topics}
        meta = consumer.list_topics(timeout=timeout_s).topics
        starts, left = [], {}
        for name in names:
            for p in meta[name].partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(name, p),
                                                           timeout=timeout_s)
                if high > low:
                    starts.append(TopicPartition(name, p, low))
                    left[(name, p)] = high
        consumer.assign(starts)
        out: list[TopicRecord] = []
        deadline = time.monotonic() + timeout_s
        while left:
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {sorted(left)} to their end")
            for m in consumer.consume(500, timeout=1):
                if m.error():
                    continue
                topic, partition, offset = m.topic() or "", m.partition() or 0, m.offset() or 0
                where = (topic, partition)
                if offset + 1 >= left.get(where, 0):
                    left.pop(where, None)
                try:
                    payload: object = from_kafka(m.headers(), m.key(), m.value()).payload
                except Exception:  # a record the pipeline dead-lettered: no request to place
                    payload = None
                out.append(TopicRecord(names[topic], partition, offset,
                                       (m.key() or b"").decode(),
                                       getattr(payload, "request_id", None),
                                       getattr(payload, "seq", None)))
        return out
    finally:
        consumer.close()
