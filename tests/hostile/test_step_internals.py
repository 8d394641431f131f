"""Rule 6 of issue 26 on the steps' CloudEvents route (what KafkaSource POSTs to): a delivery
refused as undecodable is answered in our own words, naming the header or what is wrong; what
the CloudEvents SDK or the Avro reader said goes to the log only, with the event's id."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest

from quotaflow.events.envelope import to_http
from quotaflow.functions.infer.handler import STEP as INFER
from quotaflow.functions.infer.handler import InferPorts
from quotaflow.model.standin import StandInModel
from tests.hostile.test_internals import INTERNALS
from tests.unit.fakes import reserved
from tests.unit.runtime_fakes import FakeProducer, upstream
from tests.unit.test_http_entry import client

# What the SDK and fastavro say about these inputs (checked with cloudevents 2.x, fastavro 1.x).
LIBRARY_TEXT = re.compile(r"Failed to create CloudEvent|<class|invalid literal|validation "
                          r"errors|EOFError|SchemaResolutionError|schemas/", re.IGNORECASE)


def _without(name: str) -> Any:
    return lambda h, b: ({k: v for k, v in h.items() if k.lower() != name}, b)


@pytest.mark.parametrize(("mutate", "named"), [
    (_without("ce-source"), "ce-source"),
    (lambda h, b: ({**h, "ce-id": ""}, b), "ce-id"),
    (lambda h, b: ({**h, "ce-time": "bogus"}, b), "ce-time"),
    (lambda h, b: (h, b[:3]), "Avro decode failed"),
    (lambda h, b: ({**h, "ce-dataschema": "urn:quotaflow:schema:reserved:v99"}, b), "v99"),
])
def test_rule6_the_step_route_answers_an_undecodable_event_in_its_own_words(
        caplog: pytest.LogCaptureFixture, mutate: Any, named: str) -> None:
    c = client(INFER, InferPorts(StandInModel()), FakeProducer())
    headers, body = mutate(*to_http(upstream(reserved("r6", "x", 6))))
    with caplog.at_level(logging.WARNING):
        r = c.post("/", headers=headers, data=body)
    detail = r.get_json()["detail"]
    assert r.status_code == 400 and named in detail, detail
    assert not LIBRARY_TEXT.search(detail) and not INTERNALS.search(detail), detail
    assert any("undecodable event" in rec.getMessage() for rec in caplog.records)


def test_rule6_the_log_keeps_what_the_sdk_said_with_the_event_id(
        caplog: pytest.LogCaptureFixture) -> None:
    c = client(INFER, InferPorts(StandInModel()), FakeProducer())
    headers, body = to_http(upstream(reserved("r6", "x", 6)))
    with caplog.at_level(logging.WARNING):
        r = c.post("/", headers={**headers, "ce-time": "bogus"}, data=body)
    assert r.status_code == 400
    logged = [rec.getMessage() for rec in caplog.records if "undecodable" in rec.getMessage()]
    assert logged and headers["ce-id"] in logged[0] and "invalid literal" in logged[0], logged
