"""Streaming on ONNX Runtime (the tiny random-weights model with the real tokenizer; the real
model in the slow test): deltas concatenated are the final text and equal the non-streamed
text, sequence numbers have no gap, a stop sequence cuts the text where it first appears, and a
cancelled request stops in the same round trip, billed exactly the forward passes it ran, while
its batch-mates come out as they would alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from quotaflow.adapters.memory.stream import MemoryTokenStream
from quotaflow.model.base import ChatMessage, GenerationRequest, StreamEnd, TokenDelta
from quotaflow.model.onnx_decoder import OnnxGenerator
from tests.model.test_generation import CountingSession
from tests.unit.test_model_streaming import Hooked


def ask(rid: str, text: str, max_tokens: int = 20, stop: tuple[str, ...] = (),
        seed: int | None = 7) -> GenerationRequest:
    """Seeded sampling by default: random weights answer greedily with one repeated token,
    sampled they answer varied text (multi-byte characters split across tokens included)."""
    return GenerationRequest((ChatMessage("user", text),), max_tokens,
                             temperature=None if seed is None else 1.0, seed=seed,
                             request_id=rid, stop=stop, stream=True)


BATCH = [ask("a", "Hello there"), ask("b", "Tell me a story about a dragon.", 12, seed=8),
         ask("c", "What is two plus two?", 5, seed=None)]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> OnnxGenerator:
    return OnnxGenerator(tiny_model_dir, prefer_gpu=False)


def deltas_of(stream: MemoryTokenStream, rid: str) -> tuple[list[TokenDelta], StreamEnd | None]:
    entries = stream.read(rid, count=10_000)
    return [e.delta for e in entries if e.delta], entries[-1].end if entries else None


def test_streamed_text_is_the_final_text_and_the_non_streamed_text(tiny: OnnxGenerator) -> None:
    stream = MemoryTokenStream()
    results = tiny.generate(BATCH, stream)
    assert results == tiny.generate(BATCH)
    for req, res in zip(BATCH, results, strict=True):
        deltas, end = deltas_of(stream, req.request_id)
        assert "".join(d.text for d in deltas) == res.text != ""
        assert [d.seq for d in deltas] == list(range(1, len(deltas) + 1))
        assert end == StreamEnd(req.request_id, res.finish_reason, res.prompt_tokens,
                                res.completion_tokens)


def test_a_stop_sequence_cuts_the_text_where_it_first_appears(tiny: OnnxGenerator) -> None:
    (free,) = tiny.generate([BATCH[0]])
    stop = free.text[len(free.text) // 2:][:3]
    cut = free.text.find(stop)
    stream = MemoryTokenStream()
    (stopped,) = tiny.generate([ask("a", "Hello there", stop=("never there", stop))], stream)
    assert (stopped.text, stopped.finish_reason) == (free.text[:cut], "stop")
    assert stopped.completion_tokens <= free.completion_tokens
    deltas, end = deltas_of(stream, "a")
    assert "".join(d.text for d in deltas) == stopped.text
    assert end is not None and end.completion_tokens == stopped.completion_tokens


def test_a_cancelled_request_stops_at_once_and_is_billed_the_passes_it_ran(
        tiny: OnnxGenerator) -> None:
    counting = CountingSession(tiny.session)
    at_cancel: list[int] = []

    def hang_up(stream: Hooked, deltas: list[TokenDelta], _call: int) -> None:
        if any((d.request_id, d.seq) == ("gone", 3) for d in deltas):
            at_cancel.append(counting.runs)
            stream.cancel("gone")

    tiny.session = counting
    try:
        (gone,) = tiny.generate([ask("gone", "Count from one to fifty.", 40)], Hooked(hang_up))
    finally:
        tiny.session = counting.inner
    (whole,) = tiny.generate([ask("gone", "Count from one to fifty.", 40)])
    assert gone.finish_reason == "cancelled"
    assert gone.completion_tokens == at_cancel[0] == counting.runs < whole.completion_tokens
    assert whole.text.startswith(gone.text)


def test_batch_mates_of_a_cancelled_request_come_out_as_they_would_alone(
        tiny: OnnxGenerator) -> None:
    def hang_up(stream: Hooked, deltas: list[TokenDelta], _call: int) -> None:
        if any(d.request_id == "b" and d.seq == 2 for d in deltas):
            stream.cancel("b")

    a, b, c = tiny.generate(BATCH, Hooked(hang_up))
    assert b.finish_reason == "cancelled" and b.completion_tokens < 12
    assert [a, c] == tiny.generate([BATCH[0], BATCH[2]])


@pytest.mark.slow
def test_real_model_streams_the_same_answer_and_stops_before_a_stop_sequence(
        real_model_dir: Path) -> None:
    real = OnnxGenerator(real_model_dir, prefer_gpu=False)
    france = ask("fr", "What is the capital of France?", 16, seed=None)
    stream = MemoryTokenStream()
    (streamed,) = real.generate([france], stream)
    assert streamed == real.generate([france])[0]
    assert "".join(d.text for d in deltas_of(stream, "fr")[0]) == streamed.text
    assert "Paris" in streamed.text
    (stopped,) = real.generate([ask("fr", "What is the capital of France?", 16,
                                    stop=("Paris",), seed=None)])
    assert stopped.text == streamed.text[:streamed.text.index("Paris")]
    assert stopped.finish_reason == "stop"
