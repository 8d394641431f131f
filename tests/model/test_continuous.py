"""Continuous batching on ONNX Runtime: a request that arrives while another decodes joins the
running batch at its next step, shares its forward passes, and comes out exactly as it would
alone, and so does the request it joined."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from quotaflow.model.base import GenerationRequest, GenerationResult, TokenDelta
from quotaflow.model.kv_ops import OrtKvOps
from quotaflow.model.onnx_decoder import OnnxGenerator
from tests.model.test_generation import FRANCE, OTHERS, CountingSession
from tests.model.test_streaming import ask
from tests.unit.test_model_streaming import Hooked


def joined_mid_decode(model: OnnxGenerator, running: GenerationRequest,
                      joiners: list[GenerationRequest], at_seq: int
                      ) -> tuple[GenerationResult, list[GenerationResult], int]:
    """Generate `running`; once its delta `at_seq` is out, each of `joiners` is asked for from
    a thread of its own. Answers every result and the forward passes run in all."""
    results: dict[int, GenerationResult] = {}
    threads: list[threading.Thread] = []

    def one(k: int) -> None:
        (results[k],) = model.generate([joiners[k]])

    def hook(_stream: Hooked, deltas: Sequence[TokenDelta], _call: int) -> None:
        if threads or not any(d.seq == at_seq for d in deltas):
            return
        threads.extend(threading.Thread(target=one, args=(k,)) for k in range(len(joiners)))
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while model.engine.queued < len(joiners) and time.monotonic() < deadline:
            time.sleep(0.001)  # this runs between two passes: they join at the next one

    counting = CountingSession(model.session)
    model.session = counting
    try:
        (first,) = model.generate([running], Hooked(hook))
        for t in threads:
            t.join(60)
    finally:
        model.session = counting.inner
    assert threads, "the running request never streamed the delta the joiners wait for"
    return first, [results[k] for k in range(len(joiners))], counting.runs


@pytest.fixture(scope="module", params=["numpy", "onnx graphs"])
def tiny(tiny_model_dir: Path, request: pytest.FixtureRequest) -> OnnxGenerator:
    """The tiny model, its caches joined and trimmed by NumPy (the CPU's way) or by the ONNX
    graphs that do it on CUDA (run here on the CPU)."""
    model = OnnxGenerator(tiny_model_dir, prefer_gpu=False)
    if request.param == "onnx graphs":
        model.engine.kv = OrtKvOps(2 * model.layers, device="cpu")
    return model


def test_a_request_arriving_mid_decode_joins_the_batch_and_both_come_out_as_alone(
        tiny: OnnxGenerator) -> None:
    long = ask("long", "Count from one to fifty.", 30)
    short = ask("short", "Hi", 5, seed=3)  # a shorter prompt than the running cache
    wordy = ask("wordy", "Tell me a long story about a dragon who lived under a mountain, "
                "and the knight who came looking for its gold.", 4, seed=5)  # a longer one
    (long_alone,) = tiny.generate([long])
    alone = [tiny.generate([r])[0] for r in (short, wordy)]
    assert long_alone.finish_reason == "length"

    long_joined, joined, passes = joined_mid_decode(tiny, long, [short, wordy], at_seq=3)

    assert long_joined == long_alone
    assert joined == alone
    assert (long_alone.batch_size, long_joined.batch_size) == (1, 3)
    # The joiners' decode passes were the running request's: one prefill pass of their own.
    assert passes == long_alone.completion_tokens + 1


def test_the_batch_goes_on_after_the_request_it_started_with_ends(tiny: OnnxGenerator) -> None:
    short = ask("short", "Hi", 6, seed=3)
    long = ask("long", "Count from one to fifty.", 25)
    (long_alone,) = tiny.generate([long])
    short_joined, (long_joined,), _ = joined_mid_decode(tiny, short, [long], at_seq=2)
    assert long_joined == long_alone
    assert short_joined == tiny.generate([short])[0]


@pytest.mark.slow
def test_real_model_greedy_answers_are_the_same_when_joining_a_running_batch(
        real_model_dir: Path) -> None:
    real = OnnxGenerator(real_model_dir, prefer_gpu=False)
    running = GenerationRequest(FRANCE.messages, 24, request_id="fr", stream=True)
    joiners = list(OTHERS[:3])
    (running_alone,) = real.generate([running])
    alone = real.generate(joiners)

    running_joined, joined, _ = joined_mid_decode(real, running, joiners, at_seq=2)

    assert "Paris" in running_joined.text
    assert running_joined == running_alone
    assert joined == alone
