"""The official `openai` client (pinned in the dev extra) against the whole local stack: chat and
completions answered with usage equal to the ledger's charge, streams with the usage chunk,
the model list, each error as the client's own exception, 50 concurrent streams with no token
missed or duplicated, a hang-up mid-stream charged exactly the tokens generated with the rest
released and the audit clean, and greedy streamed text equal to the text not streamed."""

from __future__ import annotations

import json
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest

from quotaflow.devstack.stack import DevStack
from tests.openai.conftest import audit, ledger_rows, new_tenant, openai_client

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def reverse(prompt: str) -> str:
    """What the stand-in model answers: the prompt's words reversed."""
    return " ".join(prompt.split()[::-1])


def record(stack: DevStack, key: str, request_id: str, timeout_s: float = 30) -> dict[str, Any]:
    """`GET /v1/requests/{id}` once the request has ended."""
    deadline = time.monotonic() + timeout_s
    while True:
        req = urllib.request.Request(f"{stack.admit_url}/v1/requests/{request_id}",
                                     headers={"Authorization": f"Bearer {key}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            view: dict[str, Any] = json.loads(resp.read())
        if view["status"] not in ("queued", "reserved") or time.monotonic() > deadline:
            return view
        time.sleep(0.05)


def quota(stack: DevStack, key: str) -> dict[str, Any]:
    req = urllib.request.Request(f"{stack.admit_url}/v1/quota",
                                 headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        got: dict[str, Any] = json.loads(resp.read())
    return got


def test_chat_and_completions_answer_with_the_ledgers_charge(openai_stack: DevStack) -> None:
    tenant, key = new_tenant(openai_stack)
    client = openai_client(openai_stack, key)
    model = openai_stack.settings.model_name
    prompt = "what is the capital of France"
    got = client.chat.completions.create(model=model, max_tokens=20,
                                         messages=[{"role": "user", "content": prompt}])
    rid = got.id.removeprefix("chatcmpl-")
    assert got._request_id == rid
    assert got.choices[0].message.content == reverse(prompt)
    assert got.choices[0].finish_reason == "stop"
    assert got.usage is not None
    view = record(openai_stack, key, rid)
    assert view["status"] == "completed" and view["output"] == reverse(prompt)
    assert got.usage.total_tokens == view["usage"]["charged_tokens"] == \
        ledger_rows(openai_stack, tenant)[rid]["ReservationSettled"]
    assert got.usage.total_tokens == got.usage.prompt_tokens + got.usage.completion_tokens

    text = client.completions.create(model=model, prompt="one two three four", max_tokens=2)
    assert (text.choices[0].text, text.choices[0].finish_reason) == ("four three", "length")
    assert text.usage is not None and text.usage.completion_tokens == 2
    assert text.usage.total_tokens == \
        ledger_rows(openai_stack, tenant)[text.id.removeprefix("cmpl-")]["ReservationSettled"]


def stream_chat(client: openai.OpenAI, model: str, prompt: str,
                max_tokens: int = 64) -> tuple[str, list[Any]]:
    chunks = list(client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens,
        stream=True, stream_options={"include_usage": True}))
    return chunks[0].id.removeprefix("chatcmpl-"), chunks


def test_a_stream_ends_with_usage_equal_to_the_ledgers_charge_and_equals_the_whole_text(
        openai_stack: DevStack) -> None:
    tenant, key = new_tenant(openai_stack)
    client = openai_client(openai_stack, key)
    model = openai_stack.settings.model_name
    prompt = "a b c d e f g h i j k l"
    rid, chunks = stream_chat(client, model, prompt, max_tokens=8)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    usage = chunks[-1]
    assert usage.choices == [] and usage.usage is not None
    assert usage.usage.total_tokens == ledger_rows(openai_stack, tenant)[rid][
        "ReservationSettled"] == record(openai_stack, key, rid)["usage"]["charged_tokens"]
    whole = client.chat.completions.create(model=model, max_tokens=8,
                                           messages=[{"role": "user", "content": prompt}])
    assert text == whole.choices[0].message.content == reverse(prompt).rsplit(" ", 4)[0]

    legacy = list(client.completions.create(model=model, prompt=prompt, max_tokens=8,
                                            stream=True))
    assert "".join(c.choices[0].text for c in legacy) == text


def test_models_lists_the_served_model(openai_stack: DevStack) -> None:
    _, key = new_tenant(openai_stack)
    client = openai_client(openai_stack, key)
    model = openai_stack.settings.model_name
    assert [m.id for m in client.models.list()] == [model]
    assert client.models.retrieve(model).id == model
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


def test_each_error_is_the_clients_own_exception(openai_stack: DevStack) -> None:
    model = openai_stack.settings.model_name
    msgs: Any = [{"role": "user", "content": "a b c d e f"}]
    _, key = new_tenant(openai_stack)
    client = openai_client(openai_stack, key, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        openai_client(openai_stack, "qf_not_a_key", max_retries=0).models.list()
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-4o", messages=msgs, max_tokens=4)
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=model, messages=msgs, max_tokens=4, temperature=7)
    assert (bad.value.type, bad.value.param) == ("invalid_request_error", "temperature")

    _, slow_key = new_tenant(openai_stack, rate=1)
    slow = openai_client(openai_stack, slow_key, max_retries=0)
    slow.chat.completions.create(model=model, messages=msgs, max_tokens=4)
    with pytest.raises(openai.RateLimitError) as limited:
        slow.chat.completions.create(model=model, messages=msgs, max_tokens=4)
    assert (limited.value.type, limited.value.code) == ("requests", "rate_limit_exceeded")
    assert int(limited.value.response.headers["Retry-After"]) >= 1

    _, poor_key = new_tenant(openai_stack, tokens=10)
    poor = openai_client(openai_stack, poor_key, max_retries=0)
    for max_tokens, stream in ((50, False), (5, False), (5, True)):
        # 50: refused by admit's pre-check; 5: admitted (6 <= 10), refused by the ledger (7 + 5)
        with pytest.raises(openai.RateLimitError) as broke:
            poor.chat.completions.create(model=model, messages=msgs, max_tokens=max_tokens,
                                         stream=stream)
        assert (broke.value.type, broke.value.code) == ("insufficient_quota",
                                                        "insufficient_quota")
        assert int(broke.value.response.headers["Retry-After"]) >= 1


def test_fifty_concurrent_streams_miss_and_duplicate_no_token(openai_stack: DevStack) -> None:
    tenant, key = new_tenant(openai_stack)
    client = openai_client(openai_stack, key, max_retries=0)
    model = openai_stack.settings.model_name
    prompts = [" ".join(f"s{i}w{j}" for j in range(10 + i % 7)) for i in range(50)]
    with ThreadPoolExecutor(50) as pool:
        streams = list(pool.map(lambda p: stream_chat(client, model, p), prompts))
    for prompt, (rid, chunks) in zip(prompts, streams, strict=True):
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        view = record(openai_stack, key, rid)
        assert text == view["output"] == reverse(prompt), rid
        tokens = [c for c in chunks if c.choices and c.choices[0].delta.content]
        assert len(tokens) == view["usage"]["completion_tokens"]  # streamed token by token
        assert chunks[-1].usage.total_tokens == view["usage"]["charged_tokens"]
    assert audit(openai_stack, tenant).returncode == 0


def test_hanging_up_mid_stream_charges_exactly_the_tokens_generated(
        openai_stack: DevStack) -> None:
    tenant, key = new_tenant(openai_stack)
    client = openai_client(openai_stack, key, max_retries=0)
    words = 400
    stream = client.chat.completions.create(
        model=openai_stack.settings.model_name, max_tokens=words, stream=True,
        messages=[{"role": "user", "content": " ".join(f"w{i}" for i in range(words))}])
    seen = []
    for chunk in stream:
        seen.append(chunk.choices[0].delta.content or "")
        if len(seen) > 3:
            break
    stream.close()  # the client hangs up after three tokens of 400
    rid = stream.response.headers["x-request-id"]
    view = record(openai_stack, key, rid)
    generated = view["usage"]["completion_tokens"]
    assert view["status"] == "completed" and 3 <= generated < words, view
    assert view["output"].startswith("".join(seen))
    prompt_tokens = view["usage"]["prompt_tokens"]
    assert ledger_rows(openai_stack, tenant)[rid] == {
        "TokensReserved": prompt_tokens + words,
        "ReservationSettled": prompt_tokens + generated}
    assert view["usage"]["charged_tokens"] == prompt_tokens + generated
    assert quota(openai_stack, key)["reserved"] == 0
    result = audit(openai_stack, tenant)
    assert result.returncode == 0, result.stdout + result.stderr


def test_following_a_streamed_cloudevent_request_ends_with_its_status_and_usage(
        openai_stack: DevStack) -> None:
    from quotaflow import client

    _, key = new_tenant(openai_stack)
    sent = client.submit(openai_stack.admit_url, key, {
        "model": openai_stack.settings.model_name, "prompt": "Say hello", "max_tokens": 6,
        "stream": True})
    ended = client.follow(openai_stack.admit_url, key, sent["request_id"], timeout_s=60)
    assert ended["status"] == "completed"
    record = client.wait(openai_stack.admit_url, key, sent["request_id"], timeout_s=30)
    assert record["status"] == "completed"
    assert ended["usage"]["completion_tokens"] == record["usage"]["completion_tokens"] > 0


def test_a_keys_tokens_per_minute_and_in_flight_cap_are_the_clients_rate_limit_errors(
        openai_stack: DevStack) -> None:
    from quotaflow.adapters import postgres as db
    from quotaflow.adapters import tenant_store as tenants

    model = openai_stack.settings.model_name
    msgs: Any = [{"role": "user", "content": "a b c d e f"}]
    name, _ = new_tenant(openai_stack)
    with db.connect(openai_stack.settings.postgres_url, autocommit=True) as conn:
        # the door holds at most 11 bytes + 16 + 64 + 4 = 95 of a request, reserve trims it
        # to 7 + 4 = 11: two fit in 110 a minute, a third does not
        metered = tenants.create_key(conn, name, tpm=110)
        narrow = tenants.create_key(conn, name, max_inflight=2)
    client = openai_client(openai_stack, metered, max_retries=0)
    for _ in range(2):
        client.chat.completions.create(model=model, messages=msgs, max_tokens=4)
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model=model, messages=msgs, max_tokens=4)
    assert (limited.value.type, limited.value.code) == ("requests", "rate_limit_exceeded")
    assert 1 <= int(limited.value.response.headers["Retry-After"]) <= 60

    slow = openai_client(openai_stack, narrow, max_retries=0)
    long: Any = [{"role": "user", "content": " ".join(f"w{i}" for i in range(40))}]

    def call(_: int) -> str:
        try:
            slow.chat.completions.create(model=model, messages=long, max_tokens=40)
            return "ok"
        except openai.RateLimitError as exc:
            assert exc.code == "rate_limit_exceeded" and "in flight" in exc.message
            return "limited"

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(call, range(6)))
    assert answers.count("ok") >= 1 and answers.count("limited") >= 1
    time.sleep(0.5)  # the last record frees its slot just after its answer
    assert slow.chat.completions.create(model=model, messages=msgs, max_tokens=4).usage
