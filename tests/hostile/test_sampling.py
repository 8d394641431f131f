"""Rule 2, sampling parameters: every numeric parameter is checked finite and in range at the
door, a temperature too small to divide by decodes greedily (the rule written in
`quotaflow.runtime.door.parse.validate_data` and the README), and nothing one request carries
can fail the requests it shares a batch with: the sampler answers a token for any row of
logits, NaN and infinities included."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from quotaflow.model.base import ChatMessage, GenerationRequest
from quotaflow.model.onnx_decoder import OnnxGenerator
from quotaflow.model.sampling import GREEDY_BELOW, pick
from quotaflow.runtime.door.parse import Limits, validate_data
from quotaflow.runtime.problem import Problem
from tests.openai.memory_pipeline import MODEL, MemoryDoor

LIMITS = Limits(MODEL, 64, 1000)


def data(**over: Any) -> dict[str, Any]:
    return {"model": MODEL, "prompt": "one two three", "max_tokens": 8, **over}


@pytest.mark.parametrize(("name", "value"), [
    ("temperature", math.nan), ("temperature", math.inf), ("temperature", -math.inf),
    ("temperature", -0.1), ("temperature", 2.5), ("temperature", "1"), ("temperature", True),
    ("top_p", math.nan), ("top_p", math.inf), ("top_p", -0.01), ("top_p", 1.01),
    ("seed", -1), ("seed", 2**63), ("seed", 1.5), ("max_tokens", 0), ("max_tokens", 65),
    ("max_tokens", 2**70), ("max_tokens", 8.0)])
def test_rule2_a_numeric_parameter_not_finite_or_out_of_range_is_400_naming_it(
        name: str, value: Any) -> None:
    with pytest.raises(Problem) as refused:
        validate_data(data(**{name: value}), LIMITS)
    assert refused.value.status == 400
    assert refused.value.extra["parameter"] == name
    assert f"data.{name}" in refused.value.detail


@pytest.mark.parametrize("body", [b'"temperature": 1e400', b'"top_p": -1e999',
                                  b'"temperature": NaN', b'"seed": Infinity'])
def test_rule2_a_number_json_cannot_hold_is_400_at_both_doors(door: MemoryDoor,
                                                              body: bytes) -> None:
    raw = (b'{"model": "standin", "messages": [{"role": "user", "content": "hi"}], '
           b'"max_tokens": 4, ' + body + b"}")
    resp = door.client.post("/v1/chat/completions", data=raw, headers=door.headers(
        **{"Content-Type": "application/json"}))
    assert resp.status_code == 400, resp.get_data(as_text=True)
    assert resp.get_json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("temperature", [1e-320, 5e-324, 1e-300, GREEDY_BELOW / 2])
def test_rule2_a_tiny_temperature_decodes_greedily(temperature: float) -> None:
    assert validate_data(data(temperature=temperature), LIMITS)["temperature"] == temperature
    logits = np.random.default_rng(0).normal(size=500).astype(np.float32)
    r = GenerationRequest((ChatMessage("user", "x"),), 4, temperature=temperature, seed=1)
    assert pick(logits, r, np.random.default_rng(1)) == int(np.argmax(logits))


def test_rule2_a_tiny_temperature_is_answered_not_500(door: MemoryDoor) -> None:
    resp = door.client.post("/v1/chat/completions", headers=door.headers(), json={
        "model": MODEL, "messages": [{"role": "user", "content": "one two"}],
        "max_tokens": 4, "temperature": 1e-320})
    assert resp.status_code == 200, resp.get_data(as_text=True)


ROWS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "a NaN": lambda row: _set(row, 7, math.nan),
    "all NaN": lambda row: np.full_like(row, math.nan),
    "+inf": lambda row: _set(row, 11, math.inf),
    "-inf": lambda row: _set(row, 3, -math.inf),
    "all -inf": lambda row: np.full_like(row, -math.inf),
    "huge": lambda row: row.astype(np.float64) * 1e300,  # finite, overflows once divided
}


def _set(row: np.ndarray, i: int, value: float) -> np.ndarray:
    out = row.copy()
    out[i] = value
    return out


@pytest.mark.parametrize("broken", list(ROWS))
@pytest.mark.parametrize(("temperature", "top_p"), [
    (None, None), (0.7, None), (1.0, 0.9), (GREEDY_BELOW, None), (2.0, 0.0), (1e-320, None),
    (math.nan, math.nan), (math.inf, None), (-1.0, 2.0)])
def test_rule2_the_sampler_answers_a_token_for_any_row(broken: str, temperature: float | None,
                                                       top_p: float | None) -> None:
    row = ROWS[broken](np.random.default_rng(2).normal(size=64).astype(np.float32))
    r = GenerationRequest((ChatMessage("user", "x"),), 4, temperature=temperature,
                          top_p=top_p, seed=3)
    token = pick(row, r, np.random.default_rng(3))
    assert 0 <= token < len(row)
    assert not math.isnan(float(row[token])) or bool(np.isnan(row).all())
    if broken == "+inf":
        assert token == 11


def test_rule2_top_p_zero_keeps_only_the_most_likely_token() -> None:
    logits = np.random.default_rng(4).normal(size=100).astype(np.float32)
    r = GenerationRequest((ChatMessage("user", "x"),), 4, temperature=1.0, top_p=0.0, seed=5)
    rng = np.random.default_rng(5)
    assert {pick(logits, r, rng) for _ in range(50)} == {int(np.argmax(logits))}


# A batch of 8 on the tiny model, through the real continuous-batching engine.
GOOD = [GenerationRequest((ChatMessage("user", p),), 6, request_id=f"good-{k}") for k, p in
        enumerate(("Hi", "Tell me a story about a dragon.", "What is 2 + 2?", "Name a colour.",
                   "Why is the sky blue?", "Write a haiku about rain.", "Say hello."))]
POISONS = {
    "temperature 1e-320": {"temperature": 1e-320, "seed": 1},
    "temperature NaN": {"temperature": math.nan, "seed": 1},
    "temperature inf": {"temperature": math.inf, "seed": 1},
    "top_p NaN": {"temperature": 1.0, "top_p": math.nan, "seed": 1},
    "negative max_tokens": {"max_tokens": -5},
}


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> OnnxGenerator:
    return OnnxGenerator(tiny_model_dir, prefer_gpu=False)


@pytest.fixture(scope="module")
def alone(tiny: OnnxGenerator) -> list[Any]:
    return [tiny.generate([r])[0] for r in GOOD]


@pytest.mark.parametrize("poison", list(POISONS))
def test_rule2_a_poisoned_request_in_a_batch_of_8_leaves_the_other_7_complete(
        tiny: OnnxGenerator, alone: list[Any], poison: str) -> None:
    bad = replace(GenerationRequest((ChatMessage("user", "1" * 200),), 6,
                                    request_id="poisoned"), **POISONS[poison])
    batch = [*GOOD[:3], bad, *GOOD[3:]]
    results = tiny.generate(batch)
    if bad.max_tokens > 0:  # it decoded alongside them
        assert [r.batch_size for r in results] == [8] * 8
    assert results[:3] + results[4:] == alone  # as they come out alone, greedy
    assert results[3].completion_tokens <= max(0, bad.max_tokens)


@pytest.fixture
def nan_rows(tiny: OnnxGenerator) -> Iterator[set[int]]:
    """Rows of the running batch whose logits every decode pass turns into NaN."""
    rows: set[int] = set()
    inner = tiny.engine._step

    def step(*args: Any) -> Any:
        logits, past = inner(*args)
        logits = np.array(logits, copy=True)
        for k in rows:
            if k < len(logits):
                logits[k] = np.nan
        return logits, past

    tiny.engine._step = step
    yield rows
    tiny.engine._step = inner


def test_rule2_a_row_of_nan_logits_fails_none_of_its_batch_mates(
        tiny: OnnxGenerator, alone: list[Any], nan_rows: set[int]) -> None:
    nan_rows.add(3)
    batch = [*GOOD[:3], replace(GOOD[0], request_id="broken"), *GOOD[3:]]
    results = tiny.generate(batch)
    assert results[:3] + results[4:] == alone
