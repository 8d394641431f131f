"""The local KafkaSource's contract parts, without Kafka or HTTP: the manifests' delivery
settings, the backoff schedule, record headers as a binary-mode CloudEvent, when a delivery is
retried and what the dead-letter sink receives."""

from __future__ import annotations

import base64

import pytest

from quotaflow.devstack.kafka_source import (
    Answer,
    DeliverySpec,
    Stopped,
    dead_letter_headers,
    deliver,
    http_headers,
    iso_duration_s,
    load_sources,
    retryable,
)
from quotaflow.runtime.steps import CONSUMER_STEPS

SPEC = DeliverySpec(retry=5, backoff_policy="exponential", backoff_delay_s=0.5)


def test_every_kafkasource_manifest_is_read_with_its_retries_and_dead_letter_topic() -> None:
    sources = {s.name: s for s in load_sources()}
    assert {s.step for s in sources.values()} == set(CONSUMER_STEPS)
    estimate = sources["quotaflow-estimate-admitted"]
    assert (estimate.step, estimate.topic, estimate.group) == (
        "estimate", "admitted", "estimate-admitted")
    assert estimate.dead_letter_topic == "admitted.dlq"
    assert estimate.delivery == SPEC
    settle_topics = sorted(s.topic for s in sources.values() if s.step == "settle")
    assert settle_topics == ["completed", "failed"]


def test_exponential_backoff_doubles_the_delay_for_each_retry() -> None:
    assert SPEC.schedule_s() == [0.5, 1.0, 2.0, 4.0, 8.0]


def test_linear_backoff_grows_the_delay_by_the_base_for_each_retry() -> None:
    assert DeliverySpec(3, "linear", 0.5).schedule_s() == [0.5, 1.0, 1.5]


@pytest.mark.parametrize(("text", "seconds"), [("PT0.5S", 0.5), ("PT2M", 120.0),
                                               ("PT1H1S", 3601.0)])
def test_iso_durations_of_backoff_delay_are_read_in_seconds(text: str, seconds: float) -> None:
    assert iso_duration_s(text) == seconds


def test_a_duration_that_is_not_iso_8601_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match="'500ms'"):
        iso_duration_s("500ms")


def test_record_headers_become_the_binary_mode_cloudevent_http_headers() -> None:
    headers = http_headers([("ce_specversion", b"1.0"), ("ce_id", b"r1/estimated"),
                            ("ce_type", b"dev.quotaflow.request.estimated"),
                            ("content-type", b"application/avro"), ("traceparent", b"00-x")])
    assert headers == {"ce-specversion": "1.0", "ce-id": "r1/estimated",
                       "ce-type": "dev.quotaflow.request.estimated",
                       "Content-Type": "application/avro"}


@pytest.mark.parametrize(("status", "again"), [(None, True), (500, True), (503, True),
                                                (404, True), (408, True), (409, True),
                                                (429, True), (400, False), (413, False),
                                                (401, False)])
def test_only_no_answer_and_the_specs_retryable_statuses_are_retried(
        status: int | None, again: bool) -> None:
    assert retryable(status) is again


def test_a_delivery_answered_2xx_is_delivered_at_once() -> None:
    pauses: list[float] = []
    out = deliver(lambda: Answer(202, b""), SPEC, pauses.append)
    assert (out.delivered, out.attempts, pauses) == (True, 1, [])


def test_a_delivery_that_keeps_failing_is_retried_with_backoff_then_given_to_the_sink() -> None:
    pauses: list[float] = []
    out = deliver(lambda: Answer(503, b"unavailable"), SPEC, pauses.append)
    assert (out.delivered, out.attempts) == (False, 6)  # the first try and 5 retries
    assert pauses == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert out.last == Answer(503, b"unavailable")


def test_a_delivery_refused_with_400_goes_to_the_sink_without_retries() -> None:
    pauses: list[float] = []
    out = deliver(lambda: Answer(400, b"bad"), SPEC, pauses.append)
    assert (out.delivered, out.attempts, pauses) == (False, 1, [])


def test_a_retry_that_succeeds_is_delivered() -> None:
    answers = iter([Answer(None, b"refused"), Answer(503, b""), Answer(200, b"ok")])
    pauses: list[float] = []
    out = deliver(lambda: next(answers), SPEC, pauses.append)
    assert (out.delivered, out.attempts, pauses) == (True, 3, [0.5, 1.0])


def test_stopping_between_retries_neither_delivers_nor_dead_letters() -> None:
    with pytest.raises(Stopped):
        deliver(lambda: Answer(503, b""), SPEC, lambda _s: None, stopping=lambda: True)


def test_the_dead_letter_record_carries_the_knative_error_extensions() -> None:
    body = b"x" * 2000
    headers = dict(dead_letter_headers([("ce_id", b"r1/reserved"), ("content-type", b"a/b")],
                                       "http://127.0.0.1:9/", 400, body))
    assert headers["ce_id"] == b"r1/reserved"
    assert headers["content-type"] == b"a/b"
    assert headers["ce_knativeerrordest"] == b"http://127.0.0.1:9/"
    assert headers["ce_knativeerrorcode"] == b"400"
    assert base64.b64decode(headers["ce_knativeerrordata"]) == body[:1024]


def test_a_sink_that_never_answered_has_no_error_code() -> None:
    headers = dict(dead_letter_headers([], "http://127.0.0.1:9/", None, b"ConnectionRefused"))
    assert "ce_knativeerrorcode" not in headers
    assert base64.b64decode(headers["ce_knativeerrordata"]) == b"ConnectionRefused"
