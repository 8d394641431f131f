"""Rule 8 of issue 26 on the local stack's own server (granian, as `quotaflow dev up` runs it):
a client that hangs up while it waits for a non-streamed answer is billed only for the tokens
generated before it did, as a hung-up stream is; and rule 9, the chaos harness's hang-ups and
retry after 5xx against the same stack, judged by its checks. The stand-in model pauses 5 ms a
token, so 400 tokens take two seconds and a hang-up lands mid-generation."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from quotaflow.chaos import hostile, observe
from quotaflow.chaos.door_checks import hostile_findings
from quotaflow.chaos.load import hostile_client
from quotaflow.chaos.plan import Send
from quotaflow.devstack.stack import DevStack
from quotaflow.functions.admit.handler import request_id_for
from quotaflow.runtime.door.openai_api.service import SOURCE
from tests.e2e.conftest import start_stack
from tests.openai.conftest import TOKEN_DELAY_MS, audit, ledger_rows, new_tenant
from tests.openai.test_openai_client import quota, record

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def openai_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    """The local stack with the stand-in pausing 5 ms a token (as tests/openai's; a stack of
    its own, database and Redis index apart, so that no session holds two on one database)."""
    s = start_stack(tmp_path_factory.mktemp("hangups"), database="qf_test_hostile_hangups",
                    redis_db=13, standin_token_delay_ms=TOKEN_DELAY_MS)
    yield s
    s.down()

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


def test_rule9_the_harness_hang_ups_and_retry_on_the_stack_are_billed_by_the_rules(
        openai_stack: DevStack) -> None:
    tenant, key = new_tenant(openai_stack)
    model = openai_stack.settings.model_name
    outs = [hostile_client(Send(n, "hostile", tenant, "openai", f"h-{n}", bad=name),
                           openai_stack.admit_url, key, model, (64, 10_000), 30)
            for n, name in enumerate(("hangup-mid-wait", "hangup-mid-stream",
                                      "retry-after-5xx"))]
    assert [o.status for o in outs] == [499, 499, 200], outs
    assert outs[0].request_id == request_id_for(tenant, SOURCE, "chaos-hangup-mid-wait-0")
    observe.wait_until_quiet(openai_stack.settings.postgres_url, lambda: set(), 30,
                             lambda _msg: None)
    snap = observe.snapshot(openai_stack.settings, set(), {})
    hung = [snap.requests[o.request_id] for o in outs[:2] if o.request_id]
    assert len(hung) == 2 and all(r.charged > 0 for r in hung), hung  # billed what ran
    assert hostile_findings(snap, outs) == []
    assert hostile.HANG_UP_AFTER_S * 1000 / 5 < hostile.LONG  # the hang-up lands mid-answer
