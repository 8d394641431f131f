"""Generation on ONNX Runtime: the real SmolLM2 model answers, a request's output does not
depend on its batch, and the billed tokens are the tokens actually generated."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from quotaflow.model.base import ChatMessage, GenerationRequest
from quotaflow.model.onnx_decoder import OnnxGenerator

FRANCE = GenerationRequest((ChatMessage("user", "What is the capital of France?"),), 16)
OTHERS = [GenerationRequest((ChatMessage("user", p),), 16) for p in (
    "Hi", "Tell me a story about a dragon.", "What is 2 + 2?", "Name a colour.",
    "Why is the sky blue?", "Write a haiku about rain.", "Translate hello into French.")]


class CountingSession:
    """Wraps the ONNX Runtime session to count forward passes."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.runs = 0

    def run(self, *args: Any) -> Any:
        self.runs += 1
        return self.inner.run(*args)

    def get_inputs(self) -> Any:
        return self.inner.get_inputs()


@pytest.fixture(scope="module")
def real(real_model_dir: Path) -> OnnxGenerator:
    return OnnxGenerator(real_model_dir, prefer_gpu=False)


@pytest.mark.slow
def test_real_model_answers_the_capital_of_france(real: OnnxGenerator) -> None:
    (r,) = real.generate([FRANCE])
    assert "Paris" in r.text
    assert r.finish_reason == "stop"
    assert r.prompt_tokens == real.count_prompt_tokens(FRANCE.messages)


@pytest.mark.slow
def test_greedy_output_is_identical_alone_and_inside_a_batch_of_8(real: OnnxGenerator) -> None:
    (alone,) = real.generate([FRANCE])
    batch = real.generate([*OTHERS[:3], FRANCE, *OTHERS[3:]])
    assert len(batch) == 8
    assert batch[3] == alone
    assert real.generate(OTHERS[:2]) == batch[:2]  # batch-mates are unaffected too


@pytest.mark.slow
def test_billed_completion_tokens_are_the_tokens_actually_generated(
        real: OnnxGenerator) -> None:
    counting = CountingSession(real.session)
    real.session = counting
    try:
        for max_tokens in (1, 5, 40):
            counting.runs = 0
            req = GenerationRequest((ChatMessage("user", "Count from one to fifty."),),
                                    max_tokens)
            (r,) = real.generate([req])
            # One forward pass per generated token: the prefill yields the first.
            assert r.completion_tokens == counting.runs
            assert r.completion_tokens <= max_tokens
            if r.finish_reason == "length":
                assert r.completion_tokens == max_tokens
    finally:
        real.session = counting.inner


@pytest.mark.slow
def test_seeded_sampling_repeats_and_ignores_batch_mates(real: OnnxGenerator) -> None:
    sampled = GenerationRequest((ChatMessage("user", "Say something nice."),), 12,
                                temperature=0.9, top_p=0.9, seed=1234)
    (first,) = real.generate([sampled])
    (again,) = real.generate([sampled])
    assert first == again
    assert real.generate([FRANCE, sampled, OTHERS[1]])[1] == first


def test_tiny_model_counts_prompts_with_the_same_template_it_feeds(
        tiny_model_dir: Path) -> None:
    gen = OnnxGenerator(tiny_model_dir, prefer_gpu=False)
    msgs = (ChatMessage("system", "Be brief."), ChatMessage("user", "Hello there"))
    (r,) = gen.generate([GenerationRequest(msgs, 3)])
    assert r.prompt_tokens == gen.count_prompt_tokens(msgs) > 10
    assert r.completion_tokens <= 3
    assert gen.generate([GenerationRequest(msgs, 0)])[0].completion_tokens == 0
