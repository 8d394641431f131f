"""The README's main job on the real model: a prompt through the whole pipeline is answered by
SmolLM2-135M-Instruct on ONNX Runtime and billed by its real token counts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from quotaflow import client
from quotaflow.devstack.stack import DevStack
from quotaflow.model.base import ChatMessage
from quotaflow.model.tokenizer import ChatTokenizer
from tests.e2e.conftest import start_stack
from tests.e2e.test_pipeline import new_tenant

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def real_stack(real_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[DevStack]:
    s = start_stack(tmp_path_factory.mktemp("real"), database="qf_test_e2e_real", redis_db=8,
                    model_source=f"dir:{real_model_dir}")
    yield s
    s.down()


def test_real_prompt_is_answered_and_billed_by_real_token_counts(
        real_stack: DevStack, real_model_dir: Path) -> None:
    _, key = new_tenant(real_stack, 10_000)
    prompt = "What is the capital of France?"
    accepted = client.submit(real_stack.admit_url, key, {
        "model": real_stack.settings.model_name, "prompt": prompt, "max_tokens": 24})
    result = client.wait(real_stack.admit_url, key, accepted["request_id"], timeout_s=120)
    assert result["status"] == "completed", result
    assert "Paris" in str(result["output"])
    usage = result["usage"]
    assert isinstance(usage, dict)
    expected_prompt = ChatTokenizer(real_model_dir).count_prompt_tokens(
        [ChatMessage("user", prompt)])
    assert usage["prompt_tokens"] == expected_prompt
    assert usage["reserved_tokens"] == expected_prompt + 24
    assert 0 < usage["completion_tokens"] <= 24
    assert usage["charged_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["charged_tokens"] <= usage["reserved_tokens"]
    assert result["model"]["version"] == real_model_dir.name  # type: ignore[index]
    quota = client.quota(real_stack.admit_url, key)
    assert quota["spent"] == usage["charged_tokens"] and quota["reserved"] == 0
