"""The OpenAI request mapping and error shapes, with no I/O: an OpenAI body becomes the same
normalized data the CloudEvents door produces, every refusal is OpenAI's error naming the
field, and the door's problems become OpenAI's statuses, types and codes."""

from __future__ import annotations

from typing import Any

import pytest

from quotaflow.ports import payload_hash
from quotaflow.runtime.door.openai_api.errors import OpenAIError, from_problem
from quotaflow.runtime.door.openai_api.mapping import CHAT, TEXT, parse_call
from quotaflow.runtime.door.parse import Limits, validate_data
from quotaflow.runtime.problem import Problem

LIMITS = Limits("m", 64, 1000)
HI = [{"role": "user", "content": "hi there"}]


def chat(**over: Any) -> dict[str, Any]:
    return {k: v for k, v in {"model": "m", "messages": HI, **over}.items() if v is not None}


def refused(kind: str, body: Any) -> OpenAIError:
    with pytest.raises(OpenAIError) as caught:
        parse_call(kind, body, LIMITS)
    return caught.value


def test_a_chat_call_is_the_cloudevents_doors_data_for_the_same_request() -> None:
    call = parse_call(CHAT, chat(max_tokens=9, temperature=0.5, top_p=0.9, seed=7,
                                 stop=["\n", "END"], stream=True, user="u-1"), LIMITS)
    assert call.data == validate_data({"model": "m", "messages": HI, "max_tokens": 9,
                                       "temperature": 0.5, "top_p": 0.9, "seed": 7,
                                       "stop": ["\n", "END"], "stream": True}, LIMITS)
    assert call.data["stop"] == ["\n", "END"] and call.data["stream"] is True
    assert (call.stream, call.include_usage, call.max_tokens) == (True, False, 9)


def test_max_completion_tokens_is_max_tokens_and_both_differing_is_refused() -> None:
    assert parse_call(CHAT, chat(max_completion_tokens=5), LIMITS).max_tokens == 5
    assert parse_call(CHAT, chat(max_completion_tokens=5, max_tokens=5), LIMITS).max_tokens == 5
    e = refused(CHAT, chat(max_completion_tokens=5, max_tokens=6))
    assert (e.status, e.param) == (400, "max_tokens")


def test_without_max_tokens_chat_reserves_the_limit_and_completions_sixteen() -> None:
    assert parse_call(CHAT, chat(), LIMITS).max_tokens == 64
    assert parse_call(TEXT, {"model": "m", "prompt": "hi"}, LIMITS).max_tokens == 16


def test_a_completion_prompt_is_one_user_message() -> None:
    call = parse_call(TEXT, {"model": "m", "prompt": ["say hi"], "max_tokens": 3}, LIMITS)
    assert call.data["messages"] == [{"role": "user", "content": "say hi"}]
    assert refused(TEXT, {"model": "m", "prompt": ["a", "b"]}).param == "prompt"
    assert refused(TEXT, {"model": "m", "prompt": ""}).param == "prompt"


def test_developer_messages_are_system_and_text_parts_are_joined() -> None:
    call = parse_call(CHAT, chat(messages=[
        {"role": "developer", "content": "be brief"},
        {"role": "user", "name": "ann", "content": [{"type": "text", "text": "a "},
                                                    {"type": "text", "text": "b"}]}]), LIMITS)
    assert call.data["messages"] == [{"role": "system", "content": "be brief"},
                                     {"role": "user", "content": "a b"}]


def test_stream_false_and_no_stop_hash_as_a_request_without_them() -> None:
    plain = parse_call(CHAT, chat(max_tokens=4), LIMITS).data
    assert parse_call(CHAT, chat(max_tokens=4, stream=False, stop=None), LIMITS).data == plain
    assert payload_hash(plain) == payload_hash(validate_data(
        {"model": "m", "messages": HI, "max_tokens": 4}, LIMITS))


@pytest.mark.parametrize("body, param", [
    (chat(temperature=5), "temperature"),
    (chat(top_p=-1), "top_p"),
    (chat(seed="x"), "seed"),
    (chat(max_tokens=0), "max_tokens"),
    (chat(max_tokens=65), "max_tokens"),
    (chat(stop=["a", "b", "c", "d", "e"]), "stop"),
    (chat(stop=[""]), "stop"),
    (chat(stream="yes"), "stream"),
    (chat(stream_options={"include_usage": True}), "stream_options"),
    (chat(stream=True, stream_options={"include_usage": 1}), "stream_options.include_usage"),
    (chat(n=2), "n"),
    (chat(tools=[{"type": "function"}]), "tools"),
    (chat(frobnicate=True), "frobnicate"),
    (chat(messages=[]), "messages"),
    (chat(messages=[{"role": "tool", "content": "x"}]), "messages[0].role"),
    (chat(messages=[{"role": "user", "content": None}]), "messages[0].content"),
    (chat(messages=[{"role": "user", "content": "x", "tool_calls": []}]),
     "messages[0].tool_calls"),
    ({"messages": HI}, "model"),
])
def test_each_bad_field_is_a_400_invalid_request_error_naming_it(body: Any, param: str) -> None:
    e = refused(CHAT, body)
    assert (e.status, e.type, e.param) == (400, "invalid_request_error", param), e.message


def test_defaults_of_unsupported_fields_and_advisory_fields_are_accepted() -> None:
    call = parse_call(CHAT, chat(n=1, presence_penalty=0, logprobs=False, user="u",
                                 metadata={"a": "b"}, stream=True,
                                 stream_options={"include_usage": True}), LIMITS)
    assert call.include_usage and "user" not in call.data and "n" not in call.data


def test_an_unknown_model_is_a_404_model_not_found() -> None:
    e = refused(CHAT, chat(model="gpt-4o"))
    assert (e.status, e.code, e.param) == (404, "model_not_found", "model")


def test_a_prompt_over_the_limit_is_a_context_length_error() -> None:
    e = refused(CHAT, chat(messages=[{"role": "user", "content": "x" * 1001}]))
    assert (e.status, e.code, e.param) == (400, "context_length_exceeded", "messages")


@pytest.mark.parametrize("problem, status, type_, code", [
    (Problem(429, "Rate limit exceeded", "x", slug="rate-limited",
             headers={"Retry-After": "7"}), 429, "requests", "rate_limit_exceeded"),
    (Problem(429, "Quota exhausted", "x", slug="quota-exhausted",
             headers={"Retry-After": "7"}), 429, "insufficient_quota", "insufficient_quota"),
    (Problem(401, "Unauthorized", "x", headers={"Retry-After": "7"}), 401,
     "invalid_request_error", "invalid_api_key"),
    (Problem(503, "Service unavailable", "x", slug="unavailable",
             headers={"Retry-After": "7"}), 503, "server_error", "service_unavailable"),
])
def test_door_problems_become_openai_errors_keeping_their_headers(
        problem: Problem, status: int, type_: str, code: str) -> None:
    e = from_problem(problem)
    assert (e.status, e.type, e.code) == (status, type_, code)
    assert e.response().headers["Retry-After"] == "7"
    assert set(e.body()["error"]) == {"message", "type", "param", "code"}


def test_the_cloudevents_door_accepts_stream_and_stop_and_names_a_bad_one() -> None:
    data = validate_data({"model": "m", "prompt": "hi", "max_tokens": 3, "stream": True,
                          "stop": "\n"}, LIMITS)
    assert (data["stream"], data["stop"]) == (True, ["\n"])
    with pytest.raises(Problem) as caught:
        validate_data({"model": "m", "prompt": "hi", "max_tokens": 3, "stop": 3}, LIMITS)
    assert "data.stop" in caught.value.detail and caught.value.extra["parameter"] == "stop"
