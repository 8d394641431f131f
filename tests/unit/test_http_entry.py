"""A step's HTTP CloudEvents entry (what Knative's KafkaSource calls) through Flask's test
client, with a producer that keeps what it is given: outputs are flushed before the 2xx, a
poison delivery is answered by its poison outputs, and what cannot be handled is a problem."""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from quotaflow.events.envelope import to_http
from quotaflow.functions.infer.handler import STEP as INFER
from quotaflow.functions.infer.handler import InferPorts
from quotaflow.functions.settle.handler import STEP as SETTLE
from quotaflow.functions.settle.handler import SettlePorts
from quotaflow.ledger.commands import ReserveTokens
from quotaflow.model.standin import StandInModel
from quotaflow.runtime.http_entry import create_app
from quotaflow.runtime.step import Held
from quotaflow.settings import Settings
from tests.unit.fakes import World, reserved
from tests.unit.runtime_fakes import FakeProducer, Fragile, fragile_step, upstream

SETTINGS = replace(Settings(), topic_prefix="t.", batch_max=8, batch_wait_ms=20,
                   handler_retries=1)
SWEEP = {"ce-specversion": "1.0", "ce-type": "dev.knative.sources.ping", "ce-source": "/ping",
         "ce-id": "p1", "content-type": "application/json"}


def app(step: Any, ports: Any, producer: FakeProducer, **kw: Any) -> Flask:
    return create_app(step, SETTINGS, ports=ports, producer=producer, **kw)  # type: ignore[arg-type]


def client(step: Any, ports: Any, producer: FakeProducer, **kw: Any) -> FlaskClient:
    return app(step, ports, producer, **kw).test_client()


def deliver(c: FlaskClient, payload: Any) -> Any:
    headers, body = to_http(upstream(payload))
    return c.post("/", headers=headers, data=body)


def test_a_delivery_is_answered_after_its_outputs_are_flushed() -> None:
    producer = FakeProducer()
    c = client(INFER, InferPorts(StandInModel()), producer)
    r = deliver(c, reserved("r1", "one two", 20))
    assert r.status_code == 200
    assert r.get_json() == {"produced": ["r1/completed"]}
    assert producer.flushed == 1 and producer.produced[0].topic == "t.completed"
    assert producer.produced[0].envelope().payload.text == "two one"  # type: ignore[union-attr]


def test_concurrent_infer_deliveries_are_each_answered_when_their_own_request_ends() -> None:
    """infer's batching is continuous (in the generator), so the HTTP entry does not gather
    deliveries into one handler call: a short request is not held back by a long one."""
    producer, answered = FakeProducer(), []
    infer = app(INFER, InferPorts(StandInModel(token_delay_s=0.02)), producer)

    def send(rid: str, words: int) -> None:
        r = deliver(infer.test_client(), reserved(rid, " ".join(["w"] * words), 40))
        answered.append((rid, r.status_code))

    threads = [threading.Thread(target=send, args=("long", 30)),
               threading.Thread(target=send, args=("short", 2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answered == [("short", 200), ("long", 200)]
    assert [p.envelope().payload.batch_size for p in producer.produced] == [1, 1]  # type: ignore[union-attr]


def test_a_poison_delivery_is_answered_with_its_poison_outputs() -> None:
    from quotaflow.functions.infer.handler import on_poison

    producer = FakeProducer()
    c = client(fragile_step(on_poison), Fragile(), producer)
    r = deliver(c, reserved("boom1", "x", 6))
    assert r.status_code == 200 and r.get_json() == {"produced": ["boom1/failed"]}
    # The record, which the client reads, says only the kind: the text is in the log.
    assert producer.produced[0].envelope().payload.reason == "handler_error"  # type: ignore[union-attr]


def test_a_poison_delivery_without_poison_outputs_is_a_500_problem() -> None:
    c = client(fragile_step(), Fragile(), FakeProducer())
    r = deliver(c, reserved("boom1", "x", 6))
    assert r.status_code == 500 and r.content_type == "application/problem+json"
    assert "model exploded" in r.get_json()["detail"]


@pytest.mark.parametrize("mutate, detail", [
    (lambda h, b: (h, b[:3]), "Avro decode failed"),
    (lambda h, b: ({**h, "ce-type": "dev.quotaflow.request.settled",
                    "ce-dataschema": "urn:quotaflow:schema:settled:v1"}, b), ""),
])
def test_an_undecodable_or_unexpected_delivery_is_a_400_problem(mutate: Any, detail: str) -> None:
    c = client(INFER, InferPorts(StandInModel()), FakeProducer())
    headers, body = mutate(*to_http(upstream(reserved("r1", "x", 6))))
    r = c.post("/", headers=headers, data=body)
    assert r.status_code == 400 and r.content_type == "application/problem+json"
    assert detail in r.get_json()["detail"]


def test_the_sweep_runs_the_steps_tick_and_only_a_step_that_has_one_takes_it() -> None:
    w = World()
    w.ledger.add_tenant("acme", 100)
    w.ledger.reserve([ReserveTokens("acme", "old", 30, "h")])
    w.clock.advance(301)
    producer = FakeProducer()
    settle = client(SETTLE, SettlePorts(w.ledger, w.projection, w.outbox, 300), producer)
    r = settle.post("/", headers=SWEEP, data=b'{"sweep": "reservations"}')
    assert r.status_code == 200 and r.get_json() == {"produced": ["old/settled"]}
    assert w.outbox.published
    r = client(INFER, InferPorts(StandInModel()), FakeProducer()).post("/", headers=SWEEP)
    assert r.status_code == 400


def test_readiness_follows_what_the_step_holds_open() -> None:
    closed = [False]
    c = client(INFER, InferPorts(StandInModel()), FakeProducer(),
               resources=Held(connections=[_Conn(closed)]))  # type: ignore[list-item]
    assert c.get("/health/readiness").status_code == 200
    closed[0] = True
    assert c.get("/health/readiness").status_code == 503
    assert c.get("/health/liveness").status_code == 200


class _Conn:
    def __init__(self, closed: list[bool]) -> None:
        self._closed = closed

    @property
    def closed(self) -> bool:
        return self._closed[0]


def test_an_outage_is_answered_503_with_retry_after_and_nothing_is_given_up() -> None:
    from quotaflow.ports import PublishTimeout

    class DownModel(StandInModel):
        def generate(self, *a: Any, **kw: Any) -> Any:
            raise PublishTimeout("broker unreachable")

    poisoned: list[str] = []
    step = replace(INFER, on_poison=lambda p, reason, ports: poisoned.append(reason) or [])
    producer = FakeProducer()
    r = deliver(client(step, InferPorts(DownModel()), producer), reserved("r1", "one", 20))
    assert r.status_code == 503 and r.headers["Retry-After"]
    assert r.content_type == "application/problem+json"
    assert poisoned == [] and producer.produced == []
