"""Bad input at admit's door on in-memory ports: each is a 4xx application/problem+json naming
what was wrong, nothing is stored or published, and nothing is logged with a stack trace. A
backing service that is down is a 503 with Retry-After (by the type of its error); any other
error is a bug: a 500 problem, logged with its trace."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import Any

import psycopg
import pytest
import redis
from confluent_kafka import KafkaError, KafkaException

from quotaflow.adapters.memory.requests import MemoryRequestStore
from quotaflow.events.catalog import REQUESTED_TYPE
from quotaflow.ports import Inserted, NewRequest, PublishTimeout, RequestView
from quotaflow.runtime.door.app import create_app
from tests.problems import MODEL, assert_problem, body
from tests.unit.test_admit_door import Door, headers

DEEP = b"[" * 5000 + b"]" * 5000


class CountingRequests(MemoryRequestStore):
    """Counts what reaches the store; `fails` raises from `insert`."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.inserts = self.fetches = 0
        self.fails: Exception | None = None

    def insert(self, request: NewRequest) -> Inserted:
        self.inserts += 1
        if self.fails is not None:
            raise self.fails
        return super().insert(request)

    def fetch(self, tenant: str, request_id: str) -> RequestView | None:
        self.fetches += 1
        return super().fetch(tenant, request_id)


class BigDoor(Door):
    """The door with the default 64 KiB body limit (5,000-deep JSON needs 10 KB)."""

    def __init__(self) -> None:
        super().__init__()
        self.requests = CountingRequests(self.clock)
        self.ports = replace(self.ports, requests=self.requests)
        self.settings = replace(self.settings, max_body_bytes=64 * 1024)
        self.client = create_app(self.settings, self.ports).test_client()

    def structured(self, **over: Any) -> Any:
        envelope = {"specversion": "1.0", "id": "s-1", "source": "/test",
                    "type": REQUESTED_TYPE, "data": json.loads(body()), **over}
        raw = over.pop("raw", None) or json.dumps(envelope).encode()
        return self.client.post("/", data=raw, headers={
            "Authorization": f"Bearer {self.keys['acme']}",
            "Content-Type": "application/cloudevents+json"})


@pytest.fixture
def door(caplog: pytest.LogCaptureFixture) -> BigDoor:
    caplog.set_level(logging.DEBUG)
    return BigDoor()


def assert_refused_quietly(door: BigDoor, caplog: pytest.LogCaptureFixture) -> None:
    assert door.requests.inserts == 0 and door.publisher.published == []
    assert [r for r in caplog.records if r.exc_info] == []


def data(**over: Any) -> bytes:
    """A request's JSON data, ASCII with escapes (as json.dumps writes it); None leaves a field
    out."""
    fields = {"model": MODEL, "prompt": "hello", "max_tokens": 8, **over}
    return json.dumps({k: v for k, v in fields.items() if v is not None}).encode()


@pytest.mark.parametrize("raw, needle", [
    (b'{"model": ' + DEEP + b"}", "data nests JSON deeper than 16 levels"),
    (b'{"model": "m", "x": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5001, "deeper than 16"),
    (data(prompt="a\ud800b"), "data.prompt contains a lone surrogate U+D800"),
    (data(prompt="a\udfffb"), "data.prompt contains a lone surrogate U+DFFF"),
    (data(prompt="a\x00b"), "data.prompt contains U+0000"),
    (data(prompt=None, messages=[{"role": "system", "content": "ok"},
                                 {"role": "user", "content": "\x00"}]),
     "data.messages[1].content contains U+0000"),
    (data(prompt=None, messages=[{"role": "user", "content": "x\udc00"}]),
     "data.messages[0].content contains a lone surrogate"),
    (data(model=MODEL + "\x00"), "unknown model"),
    (data(prompt=None, messages=[{"role": "user\x00", "content": "x"}]), "role must be one of"),
    (data(temperature=float("nan")), "NaN is not a JSON number"),
    (data(top_p=float("inf")), "Infinity is not a JSON number"),
    (data(temperature=float("-inf")), "-Infinity is not a JSON number"),
    (b'{"model": "m", "prompt": "x", "max_tokens": 8, "temperature": 1e400}', "out of range"),
    (b'{"max_tokens": 1' + b"0" * 5000 + b"}", "more than 20 digits"),
    (b'{"max_tokens": -1' + b"0" * 5000 + b"}", "more than 20 digits"),
    (b'{"prompt": "a", "prompt": "b", "model": "m", "max_tokens": 8}',
     "duplicate key 'prompt'"),
    (b'{"model": "m", "prompt": "caf\xe9", "max_tokens": 8}', "not valid UTF-8"),
    (b'{"model": "m", "prompt": "\xed\xa0\x80", "max_tokens": 8}', "not valid UTF-8"),
    (b"\xef\xbb\xbf" + data(), "not valid JSON"),
])
def test_bad_data_is_a_400_naming_it_and_nothing_is_stored(
        door: BigDoor, caplog: pytest.LogCaptureFixture, raw: bytes, needle: str) -> None:
    assert_problem(door.post(data=raw), 400, needle)
    assert_refused_quietly(door, caplog)


@pytest.mark.parametrize("over, needle", [
    ({"ce-id": "a%00b"}, "ce-id contains U+0000 at character 1"),
    ({"ce-source": "/x\x00"}, "ce-source contains U+0000"),
    ({"ce-source": "/x%0Ay"}, "ce-source contains U+000A"),
    ({"ce-id": "%ED%A0%80"}, "ce-id is not percent-encoded UTF-8"),
    ({"ce-id": "%ff"}, "ce-id is not percent-encoded UTF-8"),
    ({"ce-id": "%EF%BF%BE"}, "ce-id contains U+FFFE"),
    ({"ce-source": "/caf\xe9"}, "ce-source must be ASCII"),
    ({"ce-id": "x" * 2000}, "ce-id has 2000 characters; the limit is 1024"),
    ({"ce-subject": "%00"}, "ce-subject contains U+0000"),
])
def test_a_bad_binary_mode_header_is_a_400_naming_it(
        door: BigDoor, caplog: pytest.LogCaptureFixture, over: dict[str, str],
        needle: str) -> None:
    assert_problem(door.post(over=over), 400, needle)
    assert_refused_quietly(door, caplog)


def test_percent_encoded_utf8_in_a_header_is_decoded_and_accepted(door: BigDoor) -> None:
    assert door.post(over={"ce-id": "caf%C3%A9-%F0%9F%98%80"}).status_code == 202


@pytest.mark.parametrize("over, needle", [
    ({"id": "a\x00b"}, "id contains U+0000 at character 1"),
    ({"source": "/x\x00"}, "source contains U+0000"),
    ({"source": "/x\ud800"}, "source contains U+D800"),
    ({"id": 7}, "id must be a string"),
    ({"source": ["/x"]}, "source must be a string"),
    ({"data": {"model": MODEL, "prompt": "\x00", "max_tokens": 8}}, "data.prompt contains"),
    ({"raw": b'{"specversion": "1.0", "data": ' + DEEP + b"}"}, "body nests JSON deeper"),
    ({"raw": b'{"id": "a", "id": "b"}'}, "duplicate key 'id'"),
])
def test_a_bad_structured_event_is_a_400_naming_it(
        door: BigDoor, caplog: pytest.LogCaptureFixture, over: dict[str, Any],
        needle: str) -> None:
    assert_problem(door.structured(**over), 400, needle)
    assert_refused_quietly(door, caplog)


def test_a_prompt_with_tabs_newlines_and_astral_characters_is_accepted(door: BigDoor) -> None:
    prompt = "line one\n\tline two \U0001f600 \u00e9 \ufffe"
    assert door.post(data=data(prompt=prompt)).status_code == 202
    (envelope,) = door.publisher.published
    assert envelope.payload.messages[0].content == prompt  # type: ignore[attr-defined]


@pytest.mark.parametrize("path", ["/v1/requests/ab%00c", "/v1/requests/%ED%A0%80",
                                  "/v1/requests/not-a-uuid",
                                  "/v1/requests/{00000000-0000-0000-0000-000000000000}"])
def test_a_request_id_that_is_not_a_uuid_is_400_without_asking_the_store(
        door: BigDoor, caplog: pytest.LogCaptureFixture, path: str) -> None:
    assert_problem(door.get(path), 400, "request ids are the UUIDs")
    assert door.requests.fetches == 0
    assert [r for r in caplog.records if r.exc_info] == []


@pytest.mark.parametrize("error", [
    psycopg.OperationalError("terminating connection due to administrator command"),
    psycopg.InterfaceError("the connection is closed"),
    redis.ConnectionError("Connection refused"), redis.TimeoutError("Timeout reading"),
    ConnectionRefusedError("refused"), TimeoutError("timed out"),
    BufferError("Local: Queue full"), KafkaException(KafkaError(KafkaError._ALL_BROKERS_DOWN)),
], ids=lambda e: type(e).__name__)
def test_a_backing_service_that_is_down_is_503_with_retry_after_and_no_trace(
        door: BigDoor, caplog: pytest.LogCaptureFixture, error: Exception) -> None:
    door.requests.fails = error
    resp = door.post()
    assert_problem(resp, 503, "a backing service failed")
    assert resp.headers["Retry-After"] == "5"
    assert [r for r in caplog.records if r.exc_info] == []


def test_a_bus_that_does_not_confirm_is_503_with_retry_after(door: BigDoor) -> None:
    class Slow:
        def publish(self, envelopes: Any) -> None:
            raise PublishTimeout("1 Kafka message not delivered within 10 s")

    client = create_app(door.settings, replace(door.ports, publisher=Slow())).test_client()
    resp = client.post("/", headers=headers(door.keys["acme"]), data=body())
    assert_problem(resp, 503, "send the same event again")
    assert resp.headers["Retry-After"] == "2"


@pytest.mark.parametrize("error", [ValueError("bug"), KeyError("bug"),
                                   psycopg.DataError("invalid byte sequence")])
def test_an_unexpected_error_is_a_500_problem_logged_with_its_trace(
        door: BigDoor, caplog: pytest.LogCaptureFixture, error: Exception) -> None:
    door.requests.fails = error
    resp = door.post()
    problem = assert_problem(resp, 500, "failed unexpectedly")
    assert problem["type"].endswith("internal") and "Retry-After" not in resp.headers
    (logged,) = [r for r in caplog.records if r.exc_info]
    assert logged.levelno == logging.ERROR and logged.exc_info[1] is error  # type: ignore[index]
