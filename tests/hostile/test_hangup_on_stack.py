"""Rule 8 of issue 26 on the local stack's own server (granian, as `quotaflow dev up` runs it):
a client that hangs up while it waits for a non-streamed answer is billed only for the tokens
generated before it did, as a hung-up stream is. The stand-in model pauses 5 ms a token, so
400 tokens take two seconds and the hang-up lands mid-generation."""

from __future__ import annotations

import json
import socket
import time
from urllib.parse import urlsplit

import pytest

from quotaflow.devstack.stack import DevStack
from tests.openai.conftest import audit, ledger_rows, new_tenant, openai_stack
from tests.openai.test_openai_client import quota, record

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
__all__ = ["openai_stack"]  # the session's stack, shared with tests/openai

WORDS = 400


def reserved_request(stack: DevStack, tenant: str, timeout_s: float = 30) -> str:
    """The id of the tenant's one request, once the ledger has reserved it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rows = ledger_rows(stack, tenant)
        if rows:
            return next(iter(rows))
        time.sleep(0.02)
    raise AssertionError("the request was never reserved")


def test_rule8_a_client_that_hangs_up_mid_wait_is_billed_only_the_tokens_generated(
        openai_stack: DevStack) -> None:
    tenant, key = new_tenant(openai_stack)
    body = json.dumps({"model": openai_stack.settings.model_name, "max_tokens": WORDS,
                       "messages": [{"role": "user",
                                     "content": " ".join(f"w{i}" for i in range(WORDS))}]})
    url = urlsplit(openai_stack.admit_url)
    sock = socket.create_connection((url.hostname, url.port), timeout=30)
    sock.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nHost: {url.netloc}\r\n"
                  f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {len(body)}\r\n\r\n{body}").encode())
    rid = reserved_request(openai_stack, tenant)
    time.sleep(0.2)  # a few tokens in: generating 400 takes two seconds
    sock.close()  # the client hangs up before the answer
    view = record(openai_stack, key, rid)
    generated = view["usage"]["completion_tokens"]
    assert view["status"] == "completed" and generated < WORDS, view
    prompt_tokens = view["usage"]["prompt_tokens"]
    assert ledger_rows(openai_stack, tenant)[rid] == {
        "TokensReserved": prompt_tokens + WORDS,
        "ReservationSettled": prompt_tokens + generated}
    assert quota(openai_stack, key)["reserved"] == 0
    result = audit(openai_stack, tenant)
    assert result.returncode == 0, result.stdout + result.stderr
