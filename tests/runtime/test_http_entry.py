"""A step's HTTP CloudEvents entry, as Knative's KafkaSource calls it, on a real loopback
server and a real broker: outputs are on Kafka before the 2xx, concurrent requests are all
answered, and an undecodable delivery is a 400 problem (KafkaSource then dead-letters)."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import pytest
from confluent_kafka import Consumer
from werkzeug.serving import make_server

from quotaflow.adapters import kafka
from quotaflow.events.envelope import Envelope, from_kafka, to_http
from quotaflow.events.payloads import Completed
from quotaflow.functions.infer.handler import STEP as INFER
from quotaflow.functions.infer.handler import InferPorts
from quotaflow.model.standin import StandInModel
from quotaflow.settings import Settings
from tests.runtime.test_worker import reserved


@pytest.fixture(scope="module")
def infer_server(kafka_bootstrap: str) -> Iterator[tuple[str, Settings]]:
    from quotaflow.runtime.http_entry import create_app

    settings = replace(Settings(), kafka_bootstrap=kafka_bootstrap,
                       topic_prefix=f"h{uuid.uuid4().hex[:6]}.")
    kafka.create_topics(settings)
    app = create_app(INFER, settings, ports=InferPorts(StandInModel()))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", settings
    server.shutdown()


def post(url: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url + "/", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        assert e.headers["Content-Type"] == "application/problem+json"
        return e.code, json.loads(e.read())


def test_concurrent_deliveries_are_each_on_kafka_before_their_answer(
        infer_server: tuple[str, Settings]) -> None:
    url, settings = infer_server
    events = [reserved(f"b{i}", f"word{i} more words") for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda e: post(url, *to_http(e)), events))
    assert all(code == 200 for code, _ in answers)
    assert sorted(a["produced"][0] for _, a in answers) == sorted(f"b{i}/completed"
                                                                  for i in range(8))
    c = Consumer(kafka.client_config(settings, {
        "group.id": uuid.uuid4().hex, "auto.offset.reset": "earliest",
        "session.timeout.ms": 2000, "fetch.wait.max.ms": 50}))
    c.subscribe([settings.topic("completed")])
    got: list[Envelope] = []
    deadline = time.monotonic() + 20
    while len(got) < 8 and time.monotonic() < deadline:
        got += [from_kafka(m.headers(), m.key(), m.value()) for m in c.consume(50, 0.3)
                if not m.error()]
    c.close()
    completed = [e.payload for e in got if isinstance(e.payload, Completed)]
    assert sorted(p.request_id for p in completed) == sorted(f"b{i}" for i in range(8))
    for p in completed:
        assert p.text.split()[0] == "words"


def test_undecodable_delivery_is_a_400_problem_naming_the_cause(
        infer_server: tuple[str, Settings]) -> None:
    url, _ = infer_server
    headers, body = to_http(reserved("bad", "x"))
    code, problem = post(url, headers, body[:3])
    assert code == 400
    assert "Avro decode failed" in problem["detail"]
    code, problem = post(url, {**headers, "ce-type": "dev.quotaflow.request.settled",
                               "ce-dataschema": "urn:quotaflow:schema:settled:v1"}, body)
    assert code == 400
