"""The wire contract other teams rely on: CloudEvents Kafka binary mode with raw Avro, readable
with nothing but schemas/ and fastavro, and schemas that evolve without breaking readers."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import pytest

from quotaflow.events import avro
from quotaflow.events.catalog import EVENTS, parse_dataschema
from quotaflow.events.envelope import Envelope, UndecodableEvent, from_kafka, to_kafka
from quotaflow.events.payloads import Admitted, Completed, Message, from_record, to_record
from quotaflow.functions.estimate.handler import EstimatePorts
from quotaflow.functions.estimate.handler import handle as estimate
from quotaflow.model.standin import StandInModel
from quotaflow.ports import ChatMessage

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


ADMITTED = Admitted("req-1", "acme", "k1", "m", (Message("user", "hello there"),), 5, None,
                    None, None, datetime(2026, 11, 22, tzinfo=UTC))


def admitted() -> Envelope:
    return Envelope.of(ADMITTED, "admit")


def plain_fastavro_decode(headers: dict[str, bytes], value: bytes,
                          reader_version: int | None = None) -> dict[str, Any]:
    """What an analytics consumer does with only schemas/ and fastavro."""
    urn = headers["ce_dataschema"].decode()
    _, _, _, name, version = urn.split(":")
    writer = fastavro.parse_schema(json.loads((SCHEMAS / name / f"{version}.avsc").read_text()))
    reader = writer if reader_version is None else fastavro.parse_schema(
        json.loads((SCHEMAS / name / f"v{reader_version}.avsc").read_text()))
    out = fastavro.schemaless_reader(io.BytesIO(value), writer, reader)
    assert isinstance(out, dict)
    return out


def test_kafka_record_carries_binary_mode_headers_and_tenant_key() -> None:
    msg = to_kafka(admitted())
    assert msg.key == "acme"
    assert msg.headers["content-type"] == b"application/avro"
    for h in ("ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "ce_dataschema",
              "ce_partitionkey"):
        assert h in msg.headers, h
    assert msg.headers["ce_specversion"] == b"1.0"
    assert msg.headers["ce_type"] == b"dev.quotaflow.request.admitted"
    assert parse_dataschema(msg.headers["ce_dataschema"].decode()) == ("admitted", 2)
    assert not msg.value.startswith(b"Obj")  # raw Avro, not an object container file


def test_record_produced_by_estimate_decodes_in_the_next_step_with_only_schemas_and_fastavro(
) -> None:
    (out,) = estimate([ADMITTED], EstimatePorts(StandInModel()))
    msg = to_kafka(Envelope.of(out, "estimate"))
    decoded = plain_fastavro_decode(msg.headers, msg.value)
    assert decoded["request_id"] == "req-1"
    assert decoded["prompt_tokens"] == StandInModel().count_prompt_tokens(
        [ChatMessage("user", "hello there")])
    assert decoded["estimate_tokens"] == decoded["prompt_tokens"] + 5
    # and the runtime's own decoder agrees
    again = from_kafka(list(msg.headers.items()), msg.key, msg.value)
    assert again.payload == out
    assert to_record(again.payload) == decoded


def completed_v1() -> dict[str, Any]:
    return {"request_id": "r", "tenant": "t", "reserved_tokens": 20, "text": "hi",
            "prompt_tokens": 3, "completion_tokens": 1, "model": "m", "model_version": "v",
            "latency_ms": 1.5}


def test_next_schema_version_reads_records_written_with_the_previous_one() -> None:
    # What a producer still on v1 sends: the v1 record, its writer schema named.
    current = to_kafka(Envelope.of(from_record(Completed, completed_v1()), "infer"))
    msg = replace(current, value=avro.encode("completed", 1, completed_v1()), headers={
        **current.headers, "ce_dataschema": b"urn:quotaflow:schema:completed:v1"})
    decoded = from_kafka(list(msg.headers.items()), msg.key, msg.value).payload
    assert isinstance(decoded, Completed)
    assert decoded.finish_reason == "unknown"  # v2 default filled in
    assert decoded.batch_size == 1
    assert decoded.text == "hi"
    assert plain_fastavro_decode(msg.headers, msg.value, reader_version=2)["device"] == "cpu"


def test_every_catalog_event_has_its_schema_and_every_older_version_resolves_to_the_newest(
) -> None:
    for name, et in EVENTS.items():
        versions = avro.versions(name)
        assert et.version in versions, name
        assert versions == tuple(range(1, len(versions) + 1)), f"{name}: gap in versions"
        for v in versions:
            avro.schema(name, v)


@pytest.mark.parametrize("mutate, reason", [
    (lambda h, v: (h | {"ce_type": b"dev.other.thing"}, v), "unknown event type"),
    (lambda h, v: ({k: x for k, x in h.items() if k != "ce_dataschema"}, v), "dataschema"),
    (lambda h, v: (h | {"ce_dataschema": b"urn:quotaflow:schema:admitted:v9"}, v), "v9"),
    (lambda h, v: (h, v[:5]), "Avro decode failed"),
    (lambda h, v: (h, v + b"\x00\x01"), "trailing bytes"),
])
def test_undecodable_records_are_refused_with_a_reason(mutate: Any, reason: str) -> None:
    msg = to_kafka(admitted())
    headers, value = mutate(dict(msg.headers), msg.value)
    with pytest.raises(UndecodableEvent, match=reason):
        from_kafka(list(headers.items()), msg.key, value)


# The runtime writes and reads the Kafka binding itself (the SDK's per-event validation was a
# third of each step's CPU); these prove it byte-for-byte what the CloudEvents SDK does.
def _sdk_to_kafka(envelope: Envelope) -> Any:
    from cloudevents.core.bindings import kafka as ce_kafka

    from quotaflow.events.envelope import _RAW

    return ce_kafka.to_binary(envelope.to_cloudevent(), _RAW)


def _sdk_from_kafka(headers: dict[str, bytes], key: Any, value: bytes) -> Envelope:
    from cloudevents.core.bindings import kafka as ce_kafka

    from quotaflow.events.envelope import _RAW, _from_cloudevent

    return _from_cloudevent(ce_kafka.from_binary(ce_kafka.KafkaMessage(headers, key, value),
                                                 _RAW))


def _sample_envelopes() -> list[Envelope]:
    from datetime import timedelta, timezone

    from tests.contract.test_payloads import SAMPLES

    times = [datetime(2026, 11, 29, 9, 1, 2, 345678, tzinfo=UTC),
             datetime(2026, 11, 29, 9, 1, 2, tzinfo=UTC),  # no fraction of a second
             datetime(2026, 11, 29, 23, 59, 59, 1, tzinfo=timezone(timedelta(hours=14)))]
    return [replace(Envelope.of(p, "test") if p.request_id else Envelope(
                EVENTS[p.event_name], "id-1", "/test", p.tenant, p), time=t)
            for p in SAMPLES for t in times]


@pytest.mark.parametrize("envelope", _sample_envelopes(),
                         ids=lambda e: f"{e.type.name}-{e.time.isoformat()}")
def test_the_runtimes_kafka_binding_writes_and_reads_exactly_as_the_cloudevents_sdk(
        envelope: Envelope) -> None:
    ours, sdk = to_kafka(envelope), _sdk_to_kafka(envelope)
    assert (ours.headers, ours.key, ours.value) == (sdk.headers, sdk.key, sdk.value)
    assert list(ours.headers) == list(sdk.headers)  # the same order on the wire too
    read = from_kafka(list(sdk.headers.items()), sdk.key, sdk.value)
    assert read == _sdk_from_kafka(sdk.headers, sdk.key, sdk.value)
    assert (read.payload, read.time, read.tenant) == (envelope.payload, envelope.time,
                                                     envelope.tenant)


@pytest.mark.parametrize("mutate, reason", [
    (lambda h: {k: x for k, x in h.items() if k != "ce_id"}, "missing"),
    (lambda h: {k: x for k, x in h.items() if k != "ce_source"}, "missing"),
    (lambda h: {k: x for k, x in h.items() if k != "ce_type"}, "missing"),
    (lambda h: h | {"ce_specversion": b"0.3"}, "specversion"),
    (lambda h: {k: x for k, x in h.items() if k != "ce_specversion"}, "specversion"),
    (lambda h: h | {"ce_time": b"yesterday"}, "RFC 3339"),
    (lambda h: h | {"ce_time": b"2026-11-29T09:00:00"}, "time zone"),
    (lambda h: h | {"ce_source": b"\xff\xfe"}, "not UTF-8"),
    (lambda h: h | {"content-type": b"application/json"}, "content type"),
])
def test_records_the_sdk_would_refuse_are_undecodable_with_a_reason(mutate: Any,
                                                                    reason: str) -> None:
    msg = to_kafka(admitted())
    with pytest.raises(UndecodableEvent, match=reason):
        from_kafka(list(mutate(dict(msg.headers)).items()), msg.key, msg.value)


def test_the_record_key_is_the_tenant_even_when_the_partitionkey_header_differs() -> None:
    msg = to_kafka(admitted())  # as the SDK: the key, when there is one, is the partitionkey
    headers = dict(msg.headers) | {"ce_partitionkey": b"other"}
    assert from_kafka(list(headers.items()), b"acme", msg.value).tenant == "acme"
    assert from_kafka(list(headers.items()), None, msg.value).tenant == "other"
