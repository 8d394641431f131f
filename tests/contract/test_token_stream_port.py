"""The `TokenStream` contract, run against the in-memory stream and Redis (plain, db index 14;
over TLS with a password; a 3-master Redis Cluster: `tests.redis_servers`): deltas
and the end come back in order, a reader resumes after any entry id with no gap and no
duplicate, a redelivered batch adds nothing twice and nothing lands after the end, a blocking
read wakes on a write, and cancellation flags are per request. `-k memory` runs the fake alone,
with no services."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from quotaflow.adapters.memory.stream import MemoryTokenStream
from quotaflow.adapters.redis_stream import RedisTokenStream, cancel_key, stream_key
from quotaflow.ports import StreamEnd, StreamEntry, TokenDelta, TokenStream
from tests.redis_servers import REDIS_VARIANTS, client

REDIS_DB = 14


@pytest.fixture(params=["memory", *REDIS_VARIANTS])
def stream(request: pytest.FixtureRequest) -> TokenStream:
    if request.param == "memory":
        return MemoryTokenStream()
    return RedisTokenStream(client(request.param, REDIS_DB, flush=False))


@pytest.fixture(params=REDIS_VARIANTS)
def variant(request: pytest.FixtureRequest) -> str:
    """Which Redis a Redis-only test runs on."""
    return str(request.param)


@pytest.fixture
def rid() -> str:
    return f"req-{uuid.uuid4()}"


def deltas(rid: str, *texts: str, first: int = 1) -> list[TokenDelta]:
    return [TokenDelta(rid, first + i, t) for i, t in enumerate(texts)]


def texts(entries: list[StreamEntry]) -> list[tuple[int, str]]:
    return [(e.delta.seq, e.delta.text) for e in entries if e.delta]


def end(rid: str, finish: str = "stop") -> StreamEnd:
    return StreamEnd(rid, finish, 12, 3)


def test_deltas_then_the_end_read_back_in_order(stream: TokenStream, rid: str) -> None:
    stream.publish(deltas(rid, "The", " capital"))
    stream.publish(deltas(rid, " is", first=3), [end(rid)])
    entries = stream.read(rid)
    assert texts(entries) == [(1, "The"), (2, " capital"), (3, " is")]
    assert [e.end for e in entries] == [None, None, None, end(rid)]
    assert all((e.delta is None) != (e.end is None) for e in entries)


def test_a_reader_resumes_after_any_entry_with_no_gap_and_no_duplicate(
        stream: TokenStream, rid: str) -> None:
    stream.publish(deltas(rid, *"abcdefg"), [end(rid)])
    seen: list[StreamEntry] = []
    after = "0-0"
    while not (seen and seen[-1].end):
        page = stream.read(rid, after, count=3)
        assert page
        seen += page
        after = page[-1].entry_id
    assert [e.delta.seq for e in seen if e.delta] == list(range(1, 8))
    assert len({e.entry_id for e in seen}) == len(seen) == 8
    assert stream.read(rid, seen[-1].entry_id) == []
    assert stream.read(rid, seen[3].entry_id) == seen[4:]


def test_a_redelivered_batch_adds_nothing_twice_and_nothing_lands_after_the_end(
        stream: TokenStream, rid: str) -> None:
    stream.publish(deltas(rid, "a", "b"))
    stream.publish(deltas(rid, "a", "b", "c"))  # the same batch decoded again after a crash
    stream.publish(deltas(rid, "d", first=4), [end(rid)])
    stream.publish(deltas(rid, "late", first=5), [end(rid, "length")])
    entries = stream.read(rid)
    assert texts(entries) == [(1, "a"), (2, "b"), (3, "c"), (4, "d")]
    assert [e.end for e in entries if e.end] == [end(rid)]


def test_requests_streams_are_apart(stream: TokenStream, rid: str) -> None:
    other = rid + "-other"
    stream.publish([*deltas(rid, "mine"), *deltas(other, "theirs")], [end(other)])
    assert texts(stream.read(rid)) == [(1, "mine")]
    assert texts(stream.read(other)) == [(1, "theirs")]
    assert stream.read(rid + "-unknown") == []


def test_a_blocking_read_wakes_when_the_writer_appends(stream: TokenStream, rid: str) -> None:
    writer = threading.Timer(0.2, lambda: stream.publish(deltas(rid, "late")))
    writer.start()
    try:
        entries = stream.read(rid, block_ms=5000)
    finally:
        writer.join()
    assert texts(entries) == [(1, "late")]


def test_a_blocking_read_with_nothing_written_answers_empty_after_its_wait(
        stream: TokenStream, rid: str) -> None:
    started = time.monotonic()
    assert stream.read(rid, block_ms=150) == []
    assert time.monotonic() - started >= 0.1
    assert stream.read(rid) == []  # no wait at all


def test_a_cancellation_is_seen_by_the_writer_for_that_request_only(
        stream: TokenStream, rid: str) -> None:
    other = rid + "-other"
    assert stream.publish(watch=[rid, other]) == set()
    stream.cancel(rid)
    assert stream.publish(deltas(rid, "x"), watch=[rid, other]) == {rid}
    assert stream.cancelled([rid, other]) == {rid}
    assert stream.cancelled([other]) == set()
    assert stream.publish(deltas(other, "y")) == set()  # nothing watched, nothing answered


def test_redis_entries_have_the_documented_fields_and_everything_expires(variant: str,
                                                                         rid: str) -> None:
    c = client(variant, REDIS_DB, flush=False)
    s = RedisTokenStream(c, stream_ttl_s=300, cancel_ttl_s=200)
    s.publish(deltas(rid, "héllo"), [end(rid, "cancelled")])
    s.cancel(rid)
    raw = c.xrange(stream_key(rid))
    assert [(i.decode(), {k.decode(): v.decode() for k, v in f.items()}) for i, f in raw] == [
        ("0-1", {"seq": "1", "delta": "héllo"}),
        ("1-0", {"done": "1", "finish_reason": "cancelled", "prompt_tokens": "12",
                 "completion_tokens": "3"})]
    assert 0 < c.ttl(stream_key(rid)) <= 300
    assert 0 < c.ttl(cancel_key(rid)) <= 200


def test_a_redis_stream_is_capped_in_length(variant: str, rid: str) -> None:
    c = client(variant, REDIS_DB, flush=False)
    s = RedisTokenStream(c, maxlen=10)
    s.publish(deltas(rid, *(str(i) for i in range(500))))
    assert c.xlen(stream_key(rid)) < 500  # trimmed (approximately: whole nodes)
    assert texts(s.read(rid, "0-499")) == [(500, "499")]


def test_a_blocking_redis_read_stays_under_the_clients_socket_timeout(variant: str,
                                                                      rid: str) -> None:
    s = RedisTokenStream(client(variant, REDIS_DB, timeout_ms=600, flush=False))
    started = time.monotonic()
    assert s.read(rid, block_ms=10_000) == []
    assert time.monotonic() - started < 1.0
