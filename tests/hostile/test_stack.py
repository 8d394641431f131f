"""The issue's own reproductions, against the whole local stack on the real model (SmolLM2 on
ONNX Runtime, context 8,192) and through the official `openai` client: each input that was a
500 or a dropped connection is now a 4xx naming what was wrong, or an answer; nothing is
charged for a refusal."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from quotaflow import client
from quotaflow.devstack.stack import DevStack
from tests.e2e.conftest import start_stack
from tests.e2e.test_pipeline import new_tenant
from tests.hostile.test_internals import INTERNALS
from tests.openai.conftest import ledger_rows, openai_client

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DIGITS = "1" * 32_000  # about 32k tokens: four times the model's context


@pytest.fixture(scope="module")
def real_stack(real_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[DevStack]:
    s = start_stack(tmp_path_factory.mktemp("hostile"), database="qf_test_hostile",
                    redis_db=13, model_source=f"dir:{real_model_dir}")
    yield s
    s.down()


def get(stack: DevStack, key: str, path: str, **headers: str) -> tuple[int, str]:
    req = urllib.request.Request(stack.admit_url + path,
                                 headers={"Authorization": f"Bearer {key}", **headers})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def ended(stack: DevStack, key: str, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        _, body = get(stack, key, f"/v1/requests/{request_id}")
        got: dict[str, Any] = json.loads(body)
        if got["status"] not in ("queued", "reserved"):
            return got
        time.sleep(0.2)
    raise AssertionError(f"request {request_id} did not end")


def test_rule1_32000_digits_is_400_context_length_exceeded_and_charged_nothing(
        real_stack: DevStack) -> None:
    tenant, key = new_tenant(real_stack, 1_000_000)
    oa = openai_client(real_stack, key, max_retries=0)
    with pytest.raises(openai.BadRequestError) as refused:
        oa.chat.completions.create(model=real_stack.settings.model_name, max_tokens=16,
                                   messages=[{"role": "user", "content": DIGITS}])
    error = refused.value.body
    assert isinstance(error, dict)
    assert (error["code"], error["param"]) == ("context_length_exceeded", "messages")
    assert "8192" in error["message"] and not INTERNALS.search(error["message"])

    accepted = client.submit(real_stack.admit_url, key, {
        "model": real_stack.settings.model_name, "prompt": DIGITS, "max_tokens": 16})
    record = ended(real_stack, key, accepted["request_id"])
    assert record["status"] == "rejected"
    assert record["reason"].startswith("context_length_exceeded: ")
    assert ledger_rows(real_stack, tenant) == {}  # neither reserved nor charged
    assert client.quota(real_stack.admit_url, key)["spent"] == 0


def test_rule2_temperature_1e_320_is_answered_greedily(real_stack: DevStack) -> None:
    _, key = new_tenant(real_stack, 1_000_000)
    oa = openai_client(real_stack, key, max_retries=0)
    ask = {"model": real_stack.settings.model_name, "max_tokens": 8,
           "messages": [{"role": "user", "content": "What is the capital of France?"}]}
    tiny = oa.chat.completions.create(**ask, temperature=1e-320)  # type: ignore[call-overload]
    greedy = oa.chat.completions.create(**ask)  # type: ignore[call-overload]
    assert tiny.choices[0].message.content == greedy.choices[0].message.content


def test_rule5_usage_from_year_1_at_plus_14_is_answered(real_stack: DevStack) -> None:
    _, key = new_tenant(real_stack, 1_000)
    status, body = get(real_stack, key, "/v1/usage?from=0001-01-01T00:00:00%2B14:00")
    assert status == 200 and isinstance(json.loads(body), list)


@pytest.mark.parametrize("last", ["0-99999999999999999999999", "1_0-0"])
def test_rule5_a_bad_last_event_id_is_400_not_a_dropped_connection(real_stack: DevStack,
                                                                    last: str) -> None:
    _, key = new_tenant(real_stack, 1_000)
    accepted = client.submit(real_stack.admit_url, key, {
        "model": real_stack.settings.model_name, "prompt": "Hi", "max_tokens": 2})
    status, body = get(real_stack, key, f"/v1/requests/{accepted['request_id']}/events",
                       **{"Last-Event-ID": last})
    assert status == 400 and json.loads(body)["parameter"] == "Last-Event-ID"
