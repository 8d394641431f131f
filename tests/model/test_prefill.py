"""The shared-prefix cache of prefill: a prompt that begins with the chat template's default
system block runs only its own tokens on top of the cached block, and generates exactly what a
full prefill would; a prompt with a system message of its own runs whole. And a session told
not to spin (the local stack's infer, which shares its cores) answers the same."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from quotaflow.model.base import ChatMessage, GenerationRequest
from quotaflow.model.onnx_decoder import OnnxGenerator
from quotaflow.model.prefill import Prefill
from tests.model.test_generation import FRANCE, OTHERS
from tests.model.test_streaming import ask


class ShapeRecorder:
    """Wraps the ONNX Runtime session to record the input_ids shape of every pass."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.shapes: list[tuple[int, ...]] = []

    def run(self, names: Any, feed: dict[str, Any]) -> Any:
        self.shapes.append(tuple(feed["input_ids"].shape))
        return self.inner.run(names, feed)

    def get_inputs(self) -> Any:
        return self.inner.get_inputs()


def without_prefix_cache(model: OnnxGenerator) -> Prefill:
    return Prefill(model._step, model.tokenizer.pad_token_id, model.layers, model.kv_heads,
                   model.head_dim)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> OnnxGenerator:
    return OnnxGenerator(tiny_model_dir, prefer_gpu=False)


def test_a_prompt_with_the_default_system_block_runs_only_its_own_tokens(
        tiny: OnnxGenerator) -> None:
    prefix = tiny.tokenizer.shared_prefix()
    plain = ask("plain", "What is the capital of France?", 3)
    own = GenerationRequest((ChatMessage("system", "Be brief."), *plain.messages), 3)
    assert len(prefix) > 10
    assert tiny.tokenizer.encode_chat(plain.messages)[:len(prefix)] == prefix

    recorder = ShapeRecorder(tiny.session)
    tiny.session = recorder
    try:
        tiny.generate([plain])
        tiny.generate([own])
    finally:
        tiny.session = recorder.inner
    plain_len = tiny.count_prompt_tokens(plain.messages)
    own_len = tiny.count_prompt_tokens(own.messages)
    # Each prefill is the first pass of its call; decode passes feed one token a row.
    assert recorder.shapes == [(1, plain_len - len(prefix)), (1, 1), (1, 1),
                               (1, own_len), (1, 1), (1, 1)]


def test_generation_with_the_prefix_cache_equals_generation_without_it(
        tiny: OnnxGenerator) -> None:
    batch = [ask("a", "Hello there", 12), ask("b", "Tell me a story.", 9, seed=3),
             GenerationRequest((ChatMessage("system", "Be brief."),
                                ChatMessage("user", "Hi")), 7, temperature=1.0, seed=4)]
    cached = tiny.generate(batch)
    engine = tiny.engine
    saved, engine.prefill = engine.prefill, without_prefix_cache(tiny)
    try:
        assert tiny.generate(batch) == cached
    finally:
        engine.prefill = saved


@pytest.mark.slow
def test_real_model_greedy_answers_are_the_same_with_and_without_the_prefix_cache(
        real_model_dir: Path) -> None:
    real = OnnxGenerator(real_model_dir, prefer_gpu=False)
    batch = [FRANCE, *OTHERS[:3]]
    cached = real.generate(batch)
    real.engine.prefill = without_prefix_cache(real)
    assert real.generate(batch) == cached
    assert "Paris" in cached[0].text


def test_a_model_that_shares_its_cores_sleeps_between_operators_and_answers_the_same(
        tiny: OnnxGenerator, tiny_model_dir: Path) -> None:
    """QF_ORT_SPIN=0: same outputs, ONNX Runtime told not to spin."""
    sharing = OnnxGenerator(tiny_model_dir, prefer_gpu=False, spin=False)
    entry = "session.intra_op.allow_spinning"
    assert sharing.session.get_session_options().get_session_config_entry(entry) == "0"
    batch = [ask("a", "Hello there", 6), ask("b", "Tell me a story.", 5, seed=3)]
    assert sharing.generate(batch) == tiny.generate(batch)
