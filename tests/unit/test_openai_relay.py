"""The relay on an in-memory token stream and request store (no services): deltas in order with
no gap or duplicate across reads and a resume, an end by the record when the stream has none,
an overall timeout that cancels, and a body that cancels only when closed before its end."""

from __future__ import annotations

from datetime import UTC, datetime

from quotaflow.adapters.clock import FixedClock
from quotaflow.adapters.memory.requests import MemoryRequestStore
from quotaflow.adapters.memory.stream import MemoryTokenStream
from quotaflow.ports import FinalRecord, NewRequest, StreamEnd, TokenDelta
from quotaflow.runtime.door.openai_api import shapes
from quotaflow.runtime.door.openai_api.errors import OpenAIError
from quotaflow.runtime.door.openai_api.relay import Delta, Ended, Quiet, Relay, TimedOut, Timing
from quotaflow.runtime.door.openai_api.streaming import HangupBody, openai_chunks

RID = "r-1"
QUICK = Timing(block_ms=5, check_first_s=0.0, check_s=0.0, total_s=5.0)


def world() -> tuple[MemoryTokenStream, MemoryRequestStore]:
    clock = FixedClock(datetime(2026, 11, 29, tzinfo=UTC))
    requests = MemoryRequestStore(clock)
    requests.insert(NewRequest(RID, "acme", "k", "/t", "e", "h", "m", {}, clock.now()))
    return MemoryTokenStream(), requests


def deltas(stream: MemoryTokenStream, *texts: str, start: int = 1) -> None:
    stream.publish([TokenDelta(RID, start + i, t) for i, t in enumerate(texts)])


def test_deltas_come_in_order_across_reads_and_a_redelivery_adds_nothing() -> None:
    stream, requests = world()
    deltas(stream, "a", "b")
    deltas(stream, "a", "b", "c")  # a redelivered decode step, then a new token
    stream.publish(ends=[StreamEnd(RID, "stop", 2, 3)])
    got = list(Relay(stream, requests, "acme", RID, timing=QUICK).events())
    assert got == [Delta("0-1", "a"), Delta("0-2", "b"), Delta("0-3", "c"),
                   Ended("completed", "stop", 2, 3)]


def test_a_resume_after_an_id_sends_only_what_follows_it() -> None:
    stream, requests = world()
    deltas(stream, "a", "b", "c")
    stream.publish(ends=[StreamEnd(RID, "length", 2, 3)])
    got = list(Relay(stream, requests, "acme", RID, "0-2", timing=QUICK).events())
    assert got == [Delta("0-3", "c"), Ended("completed", "length", 2, 3)]


def test_a_stream_without_an_end_ends_by_the_record_with_the_rest_of_the_output() -> None:
    stream, requests = world()
    deltas(stream, "a", " b")
    requests.finish([FinalRecord(RID, "completed", None, 5, "a b c", 2, 3, 5)])
    got = [e for e in Relay(stream, requests, "acme", RID, max_tokens=3, timing=QUICK).events()
           if not isinstance(e, Quiet)]
    assert [e.text for e in got if isinstance(e, Delta)] == ["a", " b", " c"]
    end = got[-1]
    assert isinstance(end, Ended) and (end.status, end.finish_reason) == ("completed", "length")


def test_a_failed_request_ends_failed_and_the_chunks_carry_an_error() -> None:
    stream, requests = world()
    requests.finish([FinalRecord(RID, "failed", "model crashed", 0)])
    relay = Relay(stream, requests, "acme", RID, max_tokens=3, timing=QUICK)
    answer = shapes.Answer("chat", RID, "m", 0)
    parts = list(openai_chunks(answer, relay.events(),
                               ended_error=lambda e: OpenAIError(500, e.status, "server_error"),
                               usage_of=lambda e: {}, cancel=lambda: None))
    assert b'"error"' in parts[-1] and b"[DONE]" not in b"".join(parts)


def test_the_overall_timeout_ends_the_stream_and_cancels_the_request() -> None:
    stream, requests = world()
    deltas(stream, "a")
    relay = Relay(stream, requests, "acme", RID, timing=Timing(block_ms=5, total_s=0.05))
    cancelled: list[bool] = []
    parts = list(openai_chunks(shapes.Answer("chat", RID, "m", 0), relay.events(),
                               ended_error=lambda e: OpenAIError(500, "x"),
                               usage_of=lambda e: {}, cancel=lambda: cancelled.append(True)))
    assert cancelled == [True] and b'"timeout"' in parts[-1]
    assert isinstance(list(Relay(stream, requests, "acme", RID, timing=Timing(
        block_ms=5, total_s=0.0)).events())[-1], TimedOut)


def test_a_body_closed_before_its_end_is_a_hang_up_and_after_it_is_not() -> None:
    hung: list[str] = []
    early = HangupBody(iter([b"1", b"2"]), lambda: hung.append("early"))
    next(early)
    early.close()
    done = HangupBody(iter([b"1"]), lambda: hung.append("done"))
    assert list(done) == [b"1"]
    done.close()
    unstarted = HangupBody(iter([b"1"]), lambda: hung.append("unstarted"))
    unstarted.close()
    unstarted.close()
    assert hung == ["early", "unstarted"]
