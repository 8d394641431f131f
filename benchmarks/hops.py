"""Where one request's time goes, hop by hop: from admit's insert of the request to record's
final update, through the Kafka records each step produced, each stamped by its producer when
the step handed it on (one host clock: the stack is local). Each span is the next step's wait
for the record (the Kafka hop, its batching window) plus its handler plus its produce call;
beside it the step's own handler time (its `qf_handler_seconds`), so what is left is transport
and waiting."""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from quotaflow.adapters import kafka
from quotaflow.adapters import postgres as db
from quotaflow.events.envelope import UndecodableEvent, from_kafka
from quotaflow.settings import Settings

# (span, the stage it starts at, the stage it ends at, the step whose handler runs in it);
# "stored" is admit's insert of the request, "ended" record's final update (PostgreSQL).
SPANS = (("admit: stored → admitted produced", "stored", "admitted", ""),
         ("estimate: admitted → estimated", "admitted", "estimated", "estimate"),
         ("reserve: estimated → reserved", "estimated", "reserved", "reserve"),
         ("infer: reserved → completed", "reserved", "completed", "infer"),
         ("settle: completed → settled", "completed", "settled", "settle"),
         ("record: settled → record updated", "settled", "ended", "record"))
TOPICS = ("admitted", "estimated", "reserved", "completed", "settled")


def spans_ms(at: Mapping[str, Mapping[str, float]]) -> dict[str, list[float]]:
    """Each span's durations in ms over the requests every stage saw; `at` maps a stage to
    {request id: epoch seconds}."""
    ids = set.intersection(*(set(at.get(stage, {})) for stage in
                             {s for _, a, b, _ in SPANS for s in (a, b)}))
    return {name: [(at[end][rid] - at[start][rid]) * 1000 for rid in sorted(ids)]
            for name, start, end, _ in SPANS}


def breakdown(spans: Mapping[str, Sequence[float]], handler_ms: Mapping[str, float]
              ) -> list[dict[str, Any]]:
    """A row a span: its median and p90 (ms), the step's mean handler time a batch, and the
    median less the handler (the hop, the batching window, the produce call)."""
    rows: list[dict[str, Any]] = []
    for name, _, _, step in SPANS:
        values = sorted(spans.get(name, ()))
        if not values:
            continue
        median = statistics.median(values)
        handler = handler_ms.get(step) if step else None
        rows.append({"span": name, "n": len(values), "p50_ms": round(median, 2),
                     "p90_ms": round(values[int(0.9 * (len(values) - 1))], 2),
                     "handler_ms": handler,
                     "other_ms": round(median - handler, 2) if handler is not None else None})
    return rows


def stamps(settings: Settings, partitions: int, request_ids: set[str]
           ) -> dict[str, dict[str, float]]:
    """Each topic's records of `request_ids`: {stage: {request id: the record's timestamp}}."""
    consumer = kafka.make_consumer(settings, f"bench-hops-{uuid.uuid4().hex}")
    found: dict[str, dict[str, float]] = {}
    try:
        for stage in TOPICS:
            found[stage] = {}
            consumer.assign([TopicPartition(settings.topic(stage), p, OFFSET_BEGINNING)
                             for p in range(partitions)])
            while len(found[stage]) < len(request_ids) and (msgs := consumer.consume(500, 2.0)):
                for m in msgs:
                    if m.error():
                        continue
                    try:
                        rid = from_kafka(m.headers(), m.key(), m.value()).payload.request_id
                    except UndecodableEvent:
                        continue
                    if rid in request_ids:
                        found[stage][rid] = m.timestamp()[1] / 1000
    finally:
        consumer.close()
    return found


def measure(settings: Settings, partitions: int, handler_ms: Mapping[str, float],
            skip: int) -> list[dict[str, Any]]:
    """The breakdown of the completed requests in the stack's database after the first `skip`
    (the warm-up)."""
    with db.connect(settings.postgres_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT request_id, extract(epoch FROM created_at), extract(epoch FROM updated_at) "
            "FROM requests WHERE status = 'completed' ORDER BY created_at OFFSET %s",
            (skip,)).fetchall()
    at = stamps(settings, partitions, {str(r) for r, _, _ in rows})
    at["stored"] = {str(r): float(str(s)) for r, s, _ in rows}
    at["ended"] = {str(r): float(str(e)) for r, _, e in rows}
    return breakdown(spans_ms(at), handler_ms)


def commit_probe(pg_url: str, n: int = 200) -> dict[str, float]:
    """What a PostgreSQL round trip and a durable commit cost here, medians in ms: `SELECT 1`;
    a one-row insert committed (its WAL flushed to disk, fsync); the same with
    synchronous_commit off (not waiting for the flush). The handlers' commits are the second."""
    def median_ms(conn: Any, sql: str) -> float:
        times = []
        for _ in range(n):
            started = time.perf_counter()
            conn.execute(sql)
            times.append(time.perf_counter() - started)
        return round(statistics.median(times) * 1000, 3)

    table = f"bench_probe_{uuid.uuid4().hex[:8]}"
    with db.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (x int)")
        try:
            out = {"round_trip_ms": median_ms(conn, "SELECT 1"),
                   "commit_ms": median_ms(conn, f"INSERT INTO {table} VALUES (1)")}
            conn.execute("SET synchronous_commit = off")
            out["commit_no_flush_ms"] = median_ms(conn, f"INSERT INTO {table} VALUES (1)")
        finally:
            conn.execute(f"DROP TABLE {table}")
    return out
