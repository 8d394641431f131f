"""The `Generator`/`Tokenizer` contract, run against the stand-in model and ONNX Runtime on the
tiny random-weights model (real tokenizer), both loaded the way processes load them: one result
per request in order, within `max_tokens`, an honest finish reason, the prompt billed as
estimate counted it, and outputs that depend only on their own request. `-k memory` runs the
stand-in alone, with no model build."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from quotaflow.model.base import ChatMessage, GenerationRequest, GenerationResult
from quotaflow.model.loader import load_generator, load_tokenizer
from quotaflow.ports import Generator, Tokenizer
from quotaflow.settings import Settings


@dataclass(frozen=True)
class ModelUnderTest:
    """The generator infer serves with, and the tokenizer estimate counts with."""

    generator: Generator
    tokenizer: Tokenizer


def _loaded(source: str) -> ModelUnderTest:
    settings = replace(Settings(), model_source=source)
    return ModelUnderTest(load_generator(settings), load_tokenizer(settings))


@pytest.fixture(scope="module", params=["memory", "onnx"])
def model(request: pytest.FixtureRequest) -> ModelUnderTest:
    if request.param == "memory":
        return _loaded("standin")
    tiny: Path = request.getfixturevalue("tiny_model_dir")
    return _loaded(f"dir:{tiny}")


def ask(text: str, max_tokens: int, system: str | None = None,
        temperature: float | None = None, top_p: float | None = None, seed: int | None = None
        ) -> GenerationRequest:
    messages = ((ChatMessage("system", system),) if system else ()) + (
        ChatMessage("user", text),)
    return GenerationRequest(messages, max_tokens, temperature, top_p, seed)


PROMPTS = ["Hi", "Tell me a story about a dragon and a very small knight.",
           "What is two plus two?", "one two three"]
SAMPLED = ask("Say something nice about the weather today.", 6, temperature=0.9, top_p=0.9,
              seed=1234)


def check_finish(request: GenerationRequest, result: GenerationResult) -> None:
    """Within budget; `length` only at the budget, and `stop` whenever it ended before it."""
    assert result.finish_reason in ("stop", "length")
    assert 0 <= result.completion_tokens <= request.max_tokens
    if result.finish_reason == "length":
        assert result.completion_tokens == request.max_tokens
    if result.completion_tokens < request.max_tokens:
        assert result.finish_reason == "stop"


def outputs(results: Sequence[GenerationResult]) -> list[tuple[str, int, int, str]]:
    return [(r.text, r.prompt_tokens, r.completion_tokens, r.finish_reason) for r in results]


def test_the_model_names_its_version_and_device(model: ModelUnderTest) -> None:
    g = model.generator
    assert g.name and g.version
    assert g.device in ("cpu", "cuda")


def test_a_batch_gets_one_result_per_request_in_order(model: ModelUnderTest) -> None:
    batch = [ask(p, n) for n, p in zip((1, 4, 2, 3), PROMPTS, strict=True)]
    results = model.generator.generate(batch)
    assert len(results) == len(batch)
    assert outputs(results) == outputs([model.generator.generate([r])[0] for r in batch])
    assert model.generator.generate([]) == []


def test_completions_stay_within_max_tokens_with_an_honest_finish_reason(
        model: ModelUnderTest) -> None:
    batch = [ask(p, n) for p in PROMPTS for n in (1, 3, 8)]
    batch.append(replace(SAMPLED, max_tokens=5))
    for request, result in zip(batch, model.generator.generate(batch), strict=True):
        check_finish(request, result)


def test_max_tokens_zero_generates_nothing(model: ModelUnderTest) -> None:
    results = model.generator.generate([ask(p, 0) for p in PROMPTS] + [replace(SAMPLED,
                                                                               max_tokens=0)])
    assert [(r.text, r.completion_tokens, r.finish_reason) for r in results] == \
        [("", 0, "length")] * (len(PROMPTS) + 1)


def test_the_prompt_is_billed_as_the_tokenizer_counted_it(model: ModelUnderTest) -> None:
    batch = [ask(p, 2, system="Be brief.") for p in PROMPTS] + [ask("Hello there", 2)]
    for request, result in zip(batch, model.generator.generate(batch), strict=True):
        counted = model.tokenizer.count_prompt_tokens(request.messages)
        assert result.prompt_tokens == counted == \
            model.generator.count_prompt_tokens(request.messages)
    long, short = (model.tokenizer.count_prompt_tokens(r.messages) for r in batch[1:3])
    assert long > short > 0


def test_a_result_does_not_depend_on_its_batch_mates(model: ModelUnderTest) -> None:
    greedy = ask("What is the capital of France?", 6)
    (alone,) = model.generator.generate([greedy])
    (sampled_alone,) = model.generator.generate([SAMPLED])
    mates = [ask(p, n) for n, p in zip((8, 2, 5, 3), PROMPTS, strict=True)]
    batch = model.generator.generate([mates[0], greedy, mates[1], SAMPLED, *mates[2:]])
    assert outputs([batch[1], batch[3]]) == outputs([alone, sampled_alone])


def test_greedy_generation_is_deterministic_whatever_the_request_id(
        model: ModelUnderTest) -> None:
    batch = [ask(p, 5) for p in PROMPTS]
    first = model.generator.generate(batch)
    again = model.generator.generate([replace(r, request_id=f"r{i}")
                                      for i, r in enumerate(batch)])
    assert outputs(again) == outputs(first)


def test_the_same_seed_and_temperature_give_the_same_output(model: ModelUnderTest) -> None:
    (first,) = model.generator.generate([SAMPLED])
    (again,) = model.generator.generate([replace(SAMPLED, request_id="another")])
    assert outputs([again]) == outputs([first])
