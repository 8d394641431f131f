"""Rule 1, tokens not characters: estimate counts the prompt with the model's own tokenizer and
chat template, and a prompt plus `max_tokens` over the model's context is refused before any
reservation: the OpenAI routes answer 400 `context_length_exceeded`, the CloudEvents route's
request ends `rejected` with that reason; nothing is charged and infer never sees it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from quotaflow.events.payloads import Estimated, Rejected
from quotaflow.functions.estimate.handler import EstimatePorts, handle
from quotaflow.model.standin import StandInModel
from quotaflow.model.tokenizer import ChatTokenizer
from quotaflow.ports import ChatMessage
from tests.openai.memory_pipeline import MODEL, MemoryDoor
from tests.unit.fakes import admitted
from tests.unit.test_openai_door import post_event

CONTEXT = 40  # the stand-in's context in the door tests: a few dozen words exceed it


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> ChatTokenizer:
    return ChatTokenizer(tiny_model_dir)


def test_rule1_the_context_is_the_models_own(tiny_model_dir: Path,
                                             tokenizer: ChatTokenizer) -> None:
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert tokenizer.context_tokens == config["max_position_embeddings"] == 8192


def test_rule1_the_count_is_tokens_with_the_chat_template_not_characters(
        tokenizer: ChatTokenizer) -> None:
    digits = "1" * 32_000
    count = tokenizer.count_prompt_tokens([ChatMessage("user", digits)])
    bare = len(tokenizer._tok(digits, add_special_tokens=False)["input_ids"])
    assert count > bare > tokenizer.context_tokens  # the template's tokens come on top
    assert tokenizer.count_prompt_tokens([ChatMessage("user", "hi")]) > 1


def test_rule1_a_prompt_over_the_context_is_rejected_by_estimate_with_the_numbers(
        tokenizer: ChatTokenizer) -> None:
    ports = EstimatePorts(tokenizer)
    (out,) = handle([admitted("r1", "1" * 32_000, max_tokens=16)], ports)
    assert isinstance(out, Rejected)
    prompt = tokenizer.count_prompt_tokens([ChatMessage("user", "1" * 32_000)])
    assert out.reason.startswith("context_length_exceeded: ")
    for number in (8192, prompt, prompt + 16, 16):
        assert str(number) in out.reason
    assert (out.requested_tokens, out.period, out.ledger_seq) == (prompt + 16, None, None)


def test_rule1_a_prompt_that_fills_the_context_exactly_is_estimated() -> None:
    model = StandInModel(context_tokens=10)
    fits = admitted("r1", " ".join(["w"] * 4), max_tokens=5)  # 1 + 4 + 5 = 10
    over = admitted("r2", " ".join(["w"] * 4), max_tokens=6)
    first, second = handle([fits, over], EstimatePorts(model))
    assert isinstance(first, Estimated) and first.estimate_tokens == 10
    assert isinstance(second, Rejected) and second.requested_tokens == 11


def _long(door: MemoryDoor) -> str:
    door.pipeline.model = StandInModel(context_tokens=CONTEXT)
    return " ".join(["word"] * CONTEXT)


def _nothing_reserved_or_charged(door: MemoryDoor) -> None:
    assert (door.spent(), door.reserved()) == (0, 0)
    assert [e.kind for e in door.ledger.events_after(0) if e.request_id] == []


@pytest.mark.parametrize(("path", "param"), [("/v1/chat/completions", "messages"),
                                             ("/v1/completions", "prompt")])
@pytest.mark.parametrize("stream", [False, True])
def test_rule1_the_openai_routes_answer_400_context_length_exceeded(
        door: MemoryDoor, path: str, param: str, stream: bool) -> None:
    words = _long(door)
    body: dict[str, Any] = {"model": MODEL, "max_tokens": 8, "stream": stream}
    if param == "messages":
        body["messages"] = [{"role": "user", "content": words}]
    else:
        body["prompt"] = words
    resp = door.client.post(path, headers=door.headers(), json=body)
    assert resp.status_code == 400, resp.get_data(as_text=True)
    error = resp.get_json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error", "context_length_exceeded", param)
    prompt = CONTEXT + 1
    for number in (CONTEXT, prompt + 8, prompt, 8):
        assert str(number) in error["message"]
    rid = resp.headers["x-request-id"]
    assert door.requests.fetch("acme", rid).status == "rejected"  # type: ignore[union-attr]
    _nothing_reserved_or_charged(door)


def test_rule1_the_cloudevents_route_ends_rejected_with_the_reason(door: MemoryDoor) -> None:
    words = _long(door)
    rid = post_event(door, prompt=words)
    view = _ended(door, rid)
    assert view["status"] == "rejected"
    assert view["reason"].startswith("context_length_exceeded: ")
    assert view["usage"]["charged_tokens"] in (0, None)
    _nothing_reserved_or_charged(door)


def _ended(door: MemoryDoor, rid: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        got: dict[str, Any] = door.client.get(f"/v1/requests/{rid}",
                                              headers=door.headers()).get_json()
        if got["status"] not in ("queued", "reserved"):
            return got
        time.sleep(0.01)
    raise AssertionError(f"request {rid} did not end")


def test_rule1_infer_fails_alone_a_prompt_over_the_context_that_reached_it() -> None:
    """estimate refuses these; one estimated before it did (or for a model with a longer
    context) fails alone without running, and its batch-mates complete."""
    from quotaflow.events.payloads import Completed, Failed
    from quotaflow.functions.infer.handler import InferPorts
    from quotaflow.functions.infer.handler import handle as infer
    from tests.unit.fakes import reserved

    model = StandInModel(context_tokens=CONTEXT)
    long = reserved("long", " ".join(["w"] * CONTEXT), CONTEXT + 9)
    out = infer([reserved("a", "one two", 12), long, reserved("b", "three", 12)],
                InferPorts(model))
    assert [type(o) for o in out] == [Completed, Failed, Completed]
    failed = out[1]
    assert isinstance(failed, Failed) and failed.reserved_tokens == CONTEXT + 9
    assert failed.reason.startswith("context_length_exceeded: ")


def test_rule1_a_request_infer_failed_for_its_context_is_a_400_too(door: MemoryDoor) -> None:
    from quotaflow.ports import FinalRecord, context_length_exceeded
    from quotaflow.runtime.door.openai_api.relay import Ended
    from quotaflow.runtime.door.openai_api.service import OpenAIDoor

    door.pipeline.paused.clear()
    rid = post_event(door)
    door.requests.finish([FinalRecord(rid, "failed", context_length_exceeded(40, 41, 8), 0)])
    view = door.requests.fetch("acme", rid)
    assert view is not None
    error = OpenAIDoor(door.ports).ended_error(None, Ended("failed", None, 0, 0, view),  # type: ignore[arg-type]
                                               "prompt")
    assert (error.status, error.code, error.param) == (400, "context_length_exceeded", "prompt")
