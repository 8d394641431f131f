"""Rule 6, nothing internal reaches a client: a step that gives a request up records only the
kind of failure (what `GET /v1/requests/{id}` and the OpenAI door show), never the exception's
text, which names libraries, model nodes and files; the log carries that, with the request id.
And no answer to any input of this suite is a 5xx or names internals."""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from typing import Any

import pytest

from quotaflow.events.envelope import to_http
from quotaflow.events.payloads import Failed
from quotaflow.functions.infer.handler import on_poison
from quotaflow.model.standin import StandInModel
from quotaflow.ports import FinalRecord
from quotaflow.runtime.door.openai_api.relay import Ended
from quotaflow.runtime.door.openai_api.service import OpenAIDoor
from quotaflow.runtime.http_entry import create_app
from quotaflow.settings import Settings
from tests.openai.memory_pipeline import MODEL, MemoryDoor
from tests.unit.fakes import reserved
from tests.unit.runtime_fakes import FakeProducer, Fragile, fragile_step, upstream
from tests.unit.test_openai_door import post_event
from tests.unit.test_usage_api import Door as UsageDoor

ORT = ("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Non-zero status code returned while running "
       "FusedMatMul node. Name:'/model/model/layers.0/self_attn/MatMul' "
       "onnxruntime/core/providers/cpu/math/matmul_helper.h:142")
OLD = f"unprocessable: handler_error: RuntimeError: {ORT}"
# What an answer must not carry: exception text, library, node or file names.
INTERNALS = re.compile(r"Traceback|ONNX|onnx|FusedMatMul|/model/|\.py\b|\.h:\d|"
                       r"RuntimeError|ValueError|TypeError|KeyError|OverflowError|Exception|"
                       r"psycopg|redis\.|numpy|NoneType", re.IGNORECASE)


def test_rule6_a_step_that_gives_a_request_up_records_only_the_kind_of_failure(
        caplog: pytest.LogCaptureFixture) -> None:
    step = fragile_step(on_poison)
    handle = step.handle

    def explode(payloads: Any, ports: Fragile) -> Any:
        if any(p.request_id.startswith("boom") for p in payloads):
            raise RuntimeError(ORT)
        return handle(payloads, ports)

    producer = FakeProducer()
    app = create_app(replace(step, handle=explode),  # type: ignore[arg-type]
                     replace(Settings(), topic_prefix="t.", handler_retries=1),
                     ports=Fragile(), producer=producer)  # type: ignore[arg-type]
    headers, body = to_http(upstream(reserved("boom-7", "x", 6)))
    with caplog.at_level(logging.WARNING):
        r = app.test_client().post("/", headers=headers, data=body)
    assert r.status_code == 200
    failed = producer.produced[0].envelope().payload
    assert isinstance(failed, Failed)
    assert failed.reason == "handler_error"
    assert any("boom-7" in rec.getMessage() and "FusedMatMul" in rec.getMessage()
               for rec in caplog.records)  # the log has it, with the request id


def test_rule6_a_failed_request_shows_its_client_no_internals(door: MemoryDoor) -> None:
    """A record written before the steps kept the text out shows none of it either: not at
    `GET /v1/requests/{id}`, its event stream, nor in the OpenAI door's error."""
    door.pipeline.paused.clear()  # the record ends as the old code left it, not by the pipeline
    rid = post_event(door)
    door.requests.finish([FinalRecord(rid, "failed", OLD, 0)])
    view = door.requests.fetch("acme", rid)
    assert view is not None
    for path in (f"/v1/requests/{rid}", f"/v1/requests/{rid}/events"):
        text = door.client.get(path, headers=door.headers()).get_data(as_text=True)
        assert "unprocessable: handler_error" in text and not INTERNALS.search(text), text
    ended = Ended("failed", None, 0, 0, replace(view, status="failed", reason=OLD))
    error = OpenAIDoor(door.ports).ended_error(None, ended)  # type: ignore[arg-type]
    assert error.status == 500 and not INTERNALS.search(error.message), error.message
    assert error.message == "the request failed: unprocessable: handler_error"


HOSTILE: list[tuple[str, str, dict[str, str], Any]] = [
    ("post", "/v1/chat/completions", {}, {"model": MODEL, "max_tokens": 8, "temperature": 1e-320,
                                          "messages": [{"role": "user", "content": "hi"}]}),
    ("post", "/v1/chat/completions", {}, {"model": MODEL, "max_tokens": 8,
                                          "messages": [{"role": "user", "content": "1 " * 3000}]}),
    ("post", "/v1/completions", {}, {"model": MODEL, "max_tokens": 8, "prompt": "1 " * 3000}),
    ("usage", "?from=0001-01-01T00:00:00%2B14:00", {}, None),
    ("usage", "?to=9999-12-31T23:59:59-14:00", {}, None),
    ("usage", "?from=" + "9" * 5000, {}, None),
    ("get", "/v1/requests?limit=%C2%B2", {}, None),
    ("get", "/v1/requests?limit=" + "1" * 5000, {}, None),
    ("events", "0-99999999999999999999999", {}, None),
    ("events", "1_0-0", {}, None),
]


@pytest.mark.parametrize(("method", "path", "headers", "body"), HOSTILE)
def test_rule6_no_answer_to_a_hostile_input_is_a_5xx_or_names_internals(
        door: MemoryDoor, method: str, path: str, headers: dict[str, str], body: Any) -> None:
    door.pipeline.model = StandInModel(context_tokens=2048)
    if method == "usage":
        resp = UsageDoor().get(path)
    elif method == "events":
        rid = post_event(door)
        resp = door.client.get(f"/v1/requests/{rid}/events",
                               headers=door.headers(**{"Last-Event-ID": path}))
    elif method == "get":
        resp = door.client.get(path, headers=door.headers(**headers))
    else:
        resp = door.client.post(path, headers=door.headers(**headers), json=body)
    text = resp.get_data(as_text=True)
    assert resp.status_code < 500, text
    assert not INTERNALS.search(text), text


def test_rule6_the_chaos_harness_finds_a_bad_input_answered_with_internals() -> None:
    from quotaflow.chaos.checks import judge
    from quotaflow.chaos.facts import Outcome
    from tests.chaos.test_checks import clean

    snap, outcomes = clean()
    outcomes += [Outcome(5, "bad", 400, bad="temperature-nan",
                         detail="invalid CloudEvent: 'NoneType' object has no len()"),
                 Outcome(6, "bad", 400, bad="seed-negative",
                         detail="data.seed must be a non-negative integer")]
    assert judge(snap, outcomes).door == [
        "bad input temperature-nan answered naming internals: invalid CloudEvent: 'NoneType' "
        "object has no len()"]


@pytest.mark.parametrize("name", ["temperature-nan", "temperature-huge", "top-p-over-one",
                                  "seed-negative"])
def test_rule2_the_chaos_harness_sends_bad_sampling_parameters_answered_400(
        door: MemoryDoor, name: str) -> None:
    from quotaflow.chaos.load import bad_request
    from quotaflow.chaos.plan import BAD_INPUTS, Send

    assert name in BAD_INPUTS
    send = Send(0, "bad", "acme", "/chaos/acme", "bad-0", {}, bad=name)
    path, headers, body = bad_request(name, door.keys["acme"], send, MODEL)
    resp = door.client.post(path, headers=headers, data=body)
    text = resp.get_data(as_text=True)
    assert resp.status_code == 400 and not INTERNALS.search(text), text
