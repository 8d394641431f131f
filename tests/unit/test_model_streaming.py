"""Streaming while decoding, on the stand-in model and the memory stream: the deltas
concatenated are the final text and equal the non-streamed text, sequence numbers have no gap,
a stop sequence ends generation and is never streamed, a cancelled request stops within a few
tokens and is billed exactly what it generated, and batch-mates never notice."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from quotaflow.adapters.memory.stream import MemoryTokenStream
from quotaflow.model.base import ChatMessage, GenerationRequest, StreamEnd, TokenDelta
from quotaflow.model.standin import StandInModel
from quotaflow.model.streaming import CHECK_EVERY, BatchStream, RowText, sync_streams

WORDS = " ".join(f"w{i}" for i in range(20))  # the stand-in answers w19 w18 ... w0


def ask(rid: str, text: str = WORDS, max_tokens: int = 50, stream: bool = True,
        stop: tuple[str, ...] = ()) -> GenerationRequest:
    return GenerationRequest((ChatMessage("user", text),), max_tokens, request_id=rid,
                             stop=stop, stream=stream)


class Hooked(MemoryTokenStream):
    """The memory stream, calling `hook(self, deltas, call)` before each publish."""

    def __init__(self, hook: Callable[[Hooked, Sequence[TokenDelta], int], None]) -> None:
        super().__init__()
        self.hook = hook
        self.calls = 0

    def publish(self, deltas: Sequence[TokenDelta] = (), ends: Sequence[StreamEnd] = (),
                watch: Collection[str] = ()) -> set[str]:
        self.calls += 1
        self.hook(self, deltas, self.calls)
        return super().publish(deltas, ends, watch)


def cancel_at(rid: str, seq: int) -> Hooked:
    """A stream whose reader of `rid` hangs up once it has delta `seq`."""
    def hook(stream: Hooked, deltas: Sequence[TokenDelta], _call: int) -> None:
        if any((d.request_id, d.seq) == (rid, seq) for d in deltas):
            stream.cancel(rid)

    return Hooked(hook)


def streamed(stream: MemoryTokenStream, rid: str) -> tuple[list[TokenDelta], StreamEnd | None]:
    entries = stream.read(rid, count=10_000)
    ends = [e.end for e in entries if e.end]
    assert len(ends) <= 1 and all(e.end is None for e in entries[:-1])
    return [e.delta for e in entries if e.delta], (ends[0] if ends else None)


def test_streamed_deltas_concatenate_to_the_final_text_with_no_gap_in_seq() -> None:
    stream = MemoryTokenStream()
    batch = [ask("a"), ask("b", "one two three", max_tokens=2), ask("c", "x y")]
    results = StandInModel().generate(batch, stream)
    for req, res in zip(batch, results, strict=True):
        deltas, end = streamed(stream, req.request_id)
        assert "".join(d.text for d in deltas) == res.text
        assert [d.seq for d in deltas] == list(range(1, len(deltas) + 1))
        assert end == StreamEnd(req.request_id, res.finish_reason, res.prompt_tokens,
                                res.completion_tokens)
    assert [r.finish_reason for r in results] == ["stop", "length", "stop"]


def test_streamed_results_equal_the_results_generated_without_a_stream() -> None:
    batch = [ask("a"), ask("b", "p q r", stop=(" q",)), ask("c", max_tokens=4)]
    assert StandInModel().generate(batch, MemoryTokenStream()) == StandInModel().generate(batch)


def test_only_requests_that_asked_to_stream_are_published() -> None:
    stream = MemoryTokenStream()
    StandInModel().generate([ask("quiet", stream=False), ask("loud")], stream)
    assert stream.read("quiet") == []
    assert streamed(stream, "loud")[1] is not None


def test_a_stop_sequence_ends_generation_and_is_not_in_the_text_or_the_stream() -> None:
    stream = MemoryTokenStream()
    (r,) = StandInModel().generate([ask("s", "a b c d e", stop=("zzz", " c"))], stream)
    assert (r.text, r.finish_reason, r.completion_tokens) == ("e d", "stop", 3)
    deltas, end = streamed(stream, "s")
    assert "".join(d.text for d in deltas) == "e d"
    assert end is not None and end.finish_reason == "stop" and end.completion_tokens == 3


def test_a_cancelled_request_stops_at_once_and_is_billed_what_it_generated() -> None:
    stream = cancel_at("gone", 3)
    batch = [ask("stay"), ask("gone"), ask("quiet", stream=False)]
    stay, gone, quiet = StandInModel().generate(batch, stream)
    assert (gone.completion_tokens, gone.finish_reason) == (3, "cancelled")
    assert gone.text == "w19 w18 w17"
    assert streamed(stream, "gone")[1] == StreamEnd("gone", "cancelled", gone.prompt_tokens, 3)
    # Batch-mates are untouched: the same as generated alone.
    assert [stay, quiet] == StandInModel().generate([batch[0], batch[2]])


def test_a_request_cancelled_before_decoding_generates_nothing() -> None:
    stream = MemoryTokenStream()
    stream.cancel("early")
    early, other = StandInModel().generate([ask("early"), ask("other")], stream)
    assert (early.completion_tokens, early.text, early.finish_reason) == (0, "", "cancelled")
    assert other.completion_tokens == 20


def test_a_batch_that_streams_nothing_still_stops_a_cancelled_request_within_a_few_tokens(
        ) -> None:
    stream = Hooked(lambda s, _ds, call: s.cancel("hungup") if call == 2 else None)
    hungup, other = StandInModel().generate(
        [ask("hungup", stream=False), ask("other", stream=False)], stream)
    assert hungup.finish_reason == "cancelled"
    # Checked before decoding and then every CHECK_EVERY steps: cancelled at the second check.
    assert hungup.completion_tokens <= CHECK_EVERY + 1
    assert stream.calls <= 2 + 20 // CHECK_EVERY  # not a round trip per step
    assert other.completion_tokens == 20


def test_a_failing_stream_never_fails_the_batch() -> None:
    def broken(_s: Hooked, _ds: Sequence[TokenDelta], _call: int) -> None:
        raise ConnectionError("redis is down")

    batch = [ask("a"), ask("b", stop=(" w15",))]
    assert StandInModel().generate(batch, Hooked(broken)) == StandInModel().generate(batch)


def test_row_text_holds_back_what_may_begin_a_stop_sequence() -> None:
    row = RowText(("\n\n", "END"))
    assert [row.feed(p) for p in ("Hel", "lo\n", "E", "ast", "\n")] == [
        "Hel", "lo", "\n", "East", ""]
    assert row.feed("\nmore") == "" and row.stopped
    assert row.text == "Hello\nEast"


def test_row_text_releases_held_text_when_generation_ends() -> None:
    row = RowText(("END",))
    assert row.feed("the EN") == "the "
    assert row.flush() == "EN"
    assert (row.text, row.stopped) == ("the EN", False)


def test_row_text_ignores_empty_stop_sequences_and_honours_at_most_four() -> None:
    assert RowText(("", "a", "b", "c", "d", "e")).stops == ("a", "b", "c")
    assert RowText(("",)).feed("anything") == "anything"


alphabet = st.text(alphabet="ab\n", max_size=30)


@given(text=alphabet, cuts=st.lists(st.integers(0, 30), max_size=8),
       stops=st.lists(st.text(alphabet="ab\n", min_size=1, max_size=3), max_size=4))
def test_released_text_is_the_text_up_to_the_first_stop_sequence_to_complete(
        text: str, cuts: list[int], stops: list[str]) -> None:
    row = RowText(tuple(stops))
    bounds = [0, *sorted(min(c, len(text)) for c in cuts), len(text)]
    released = [row.feed(text[a:b]) for a, b in pairwise(bounds)]
    if not row.stopped:
        released.append(row.flush())
    # The stop sequence that completes first, and of those the longest, cuts the text.
    ends = [(i + len(s), i) for s, i in ((s, text.find(s)) for s in stops) if i >= 0]
    cut = min(ends)[1] if ends else len(text)
    assert "".join(released) == row.text == text[:cut]
    assert row.stopped == bool(ends)


def test_concurrent_calls_sharing_a_sink_publish_in_one_round_trip_and_get_their_own_cancels(
        ) -> None:
    calls: list[tuple[list[str], set[str]]] = []

    def hook(stream: Hooked, deltas: Sequence[TokenDelta], _call: int) -> None:
        calls.append(([d.request_id for d in deltas], set()))

    sink = Hooked(hook)
    sink.cancel("b")
    one = BatchStream([ask("a")], sink)
    two = BatchStream([ask("b"), ask("c")], sink)
    one.add(0, "hello")
    two.add(1, "there")
    assert sync_streams([(one, [0]), (two, [0, 1])]) == [[], [0]]
    assert [ids for ids, _ in calls] == [["a", "c"]]  # one round trip for both calls


def test_a_failing_shared_sink_stops_streaming_for_every_call_on_it() -> None:
    def hook(_s: Hooked, _d: Sequence[TokenDelta], _c: int) -> None:
        raise ConnectionError("redis went away")

    sink = Hooked(hook)
    one, two = BatchStream([ask("a")], sink), BatchStream([ask("b")], sink)
    one.add(0, "x")
    assert sync_streams([(one, [0]), (two, [0])]) == [[], []]
    assert one.sink is None and two.sink is None
