"""Each typed payload class is its event's Avro schema, field for field: the same names in the
same order, types that hold exactly what the schema does, the same defaults; and every payload
survives the trip through the codec unchanged."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import pytest

from quotaflow.events import avro
from quotaflow.events.catalog import EVENTS
from quotaflow.events.envelope import Envelope, from_kafka, to_kafka
from quotaflow.events.payloads import (
    ENUM_FIELDS,
    PAYLOADS,
    Admitted,
    Completed,
    Estimated,
    Failed,
    LedgerEntry,
    Message,
    Payload,
    Recorded,
    Rejected,
    Reserved,
    Settled,
    from_record,
    to_record,
)
from quotaflow.events.resources import data_path
from quotaflow.events.status import FinishReason, LedgerKind, RequestStatus, SettlementStatus

AT = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
REQUEST: dict[str, Any] = dict(
    request_id="r-1", tenant="acme", key_id="k-1", model="m",
    messages=(Message("system", "be brief"), Message("user", "hi")), max_tokens=8,
    temperature=0.5, top_p=None, seed=7, admitted_at_ms=AT)
SAMPLES: list[Payload] = [
    Admitted(**REQUEST),
    Estimated(**REQUEST, prompt_tokens=5, estimate_tokens=13, stop=("\n\n", "END"),
              stream=True),
    Reserved(**REQUEST, prompt_tokens=5, reserved_tokens=13, period="2026-11", ledger_seq=4),
    Rejected("r-1", "acme", 13, "quota_exceeded", "2026-11", 5),
    Rejected("r-2", "acme", 13, "unprocessable: bad"),
    Completed("r-1", "acme", 13, "hello", 5, 2, "m", "v1", 12.5, FinishReason.STOP, 2, "cpu"),
    Failed("r-1", "acme", 13, "handler_error"),
    Settled("r-1", "acme", SettlementStatus.COMPLETED, 13, 7, 6, 5, 2, "hello", "m", "v1", None, 9),
    Recorded("r-1", "acme", RequestStatus.COMPLETED),
    LedgerEntry(9, "acme", 3, LedgerKind.RESERVATION_SETTLED, "r-1", "2026-11", 7, 6, AT),
]
PRIMITIVES: dict[str, type] = {"string": str, "int": int, "long": int, "double": float,
                               "boolean": bool}


def _schema(name: str) -> dict[str, Any]:
    path = data_path("schemas") / name / f"v{EVENTS[name].version}.avsc"
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def _python_type(avro_type: Any) -> Any:
    """The Python annotation that holds exactly what `avro_type` does."""
    if isinstance(avro_type, list):
        assert avro_type[0] == "null" and len(avro_type) == 2, avro_type
        return _python_type(avro_type[1]) | None
    if isinstance(avro_type, dict):
        if avro_type.get("logicalType") == "timestamp-millis":
            return datetime
        if avro_type["type"] == "array":
            if avro_type["items"] == "string":
                return tuple[str, ...]
            assert avro_type["items"]["name"] == "Message"
            return tuple[Message, ...]
        return _python_type(avro_type["type"])
    return PRIMITIVES[avro_type]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, types.UnionType) or isinstance(b, types.UnionType):
        return set(typing.get_args(a)) == set(typing.get_args(b))
    return bool(a == b)


def test_every_event_type_has_exactly_one_payload_class() -> None:
    assert set(PAYLOADS) == set(EVENTS)
    assert {type(s).event_name for s in SAMPLES} == set(EVENTS)


@pytest.mark.parametrize("name", sorted(EVENTS))
def test_payload_class_has_the_schemas_fields_in_order_with_its_types_and_its_defaults(
        name: str) -> None:
    cls = PAYLOADS[name]
    schema_fields = _schema(name)["fields"]
    fields = dataclasses.fields(cls)
    assert [f.name for f in fields] == [f["name"] for f in schema_fields]
    hints = typing.get_type_hints(cls)
    for field, avro_field in zip(fields, schema_fields, strict=True):
        expected = _python_type(avro_field["type"])
        # A string the payload reads as an enum (quotaflow.events.status): `from_record` makes
        # members.
        hint = hints[field.name]
        if isinstance(hint, type) and issubclass(hint, StrEnum):
            assert (expected, ENUM_FIELDS[cls].get(field.name)) == (str, hint), (name, field.name)
            continue
        assert _same(hints[field.name], expected), (name, field.name, hints[field.name])
        # A schema default serves readers of older records; Python may still ask for the
        # field, but a default it has is the schema's.
        if field.default is not dataclasses.MISSING:
            assert "default" in avro_field, (name, field.name)
            default = list(field.default) if isinstance(field.default, tuple) else field.default
            assert default == avro_field["default"], (name, field.name)


@pytest.mark.parametrize("payload", SAMPLES, ids=lambda p: type(p).__name__)
def test_payload_survives_the_avro_codec_and_the_kafka_binding_unchanged(
        payload: Payload) -> None:
    name = payload.event_name
    record = avro.decode(name, EVENTS[name].version,
                         avro.encode(name, EVENTS[name].version, to_record(payload)))
    assert from_record(PAYLOADS[name], record) == payload
    message = to_kafka(Envelope.of(payload, "test") if payload.request_id else Envelope(
        EVENTS[name], "ledger/9", "/quotaflow/ledger", payload.tenant, payload))
    assert from_kafka(message.headers, message.key, message.value).payload == payload



@pytest.mark.parametrize("name", ["admitted", "estimated", "reserved"])
def test_a_v1_request_record_reads_as_v2_with_no_stop_sequences_and_no_streaming(
        name: str) -> None:
    payload = next(p for p in SAMPLES if p.event_name == name)
    v1 = {k: v for k, v in to_record(payload).items() if k not in ("stop", "stream")}
    record = avro.decode(name, 1, avro.encode(name, 1, v1))
    decoded = from_record(PAYLOADS[name], record)
    assert (decoded.stop, decoded.stream) == ((), False)  # type: ignore[union-attr]
