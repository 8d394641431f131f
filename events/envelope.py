"""Our events on the wire: the CloudEvents Kafka binding in binary content mode with an Avro
value, and the HTTP binding (binary or structured) for what Knative's KafkaSource delivers.

    headers: ce_specversion ce_id ce_source ce_type ce_time ce_dataschema ce_partitionkey
             content-type: application/avro
    key:     the tenant id            value: raw Avro binary of the data
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.v1.event import CloudEvent

from events import avro
from events.catalog import BY_CE_TYPE, EVENTS, EventType, dataschema_uri, parse_dataschema
from events.payloads import PAYLOADS, Payload, from_record, to_record

AVRO_CONTENT_TYPE = "application/avro"


class UndecodableEvent(ValueError):
    """A record that can never be decoded (unknown type, schema, or bad payload)."""


class _RawBytes:
    """A CloudEvents `Format` that leaves the data as raw bytes: the Avro value is encoded
    and decoded by `events.avro`, which needs the writer schema from `ce_dataschema`."""

    def read(self, event_factory: Any, data: str | bytes) -> BaseCloudEvent:
        raise NotImplementedError("structured mode is not used for Avro data")

    def write(self, event: BaseCloudEvent) -> bytes:
        raise NotImplementedError("structured mode is not used for Avro data")

    def write_data(self, data: Any, datacontenttype: str | None) -> bytes:
        return bytes(data or b"")

    def read_data(self, body: bytes, datacontenttype: str | None) -> bytes:
        return bytes(body)

    def get_content_type(self) -> str:
        return AVRO_CONTENT_TYPE


_RAW = _RawBytes()


@dataclass(frozen=True)
class Envelope:
    """One record on the wire: the catalog type, the CloudEvents identity, the tenant (the
    record key) and the typed payload."""

    type: EventType
    id: str
    source: str
    tenant: str
    payload: Payload
    time: datetime = field(default_factory=lambda: datetime.now(UTC))
    writer_version: int = 0  # 0: the catalog's current version

    @classmethod
    def of(cls, payload: Payload, step: str) -> Envelope:
        """The envelope `step` publishes for a request's payload. Its id derives from the
        request id and the event, so a redelivered input produces the same output id."""
        if payload.request_id is None:
            raise ValueError(f"a {payload.event_name} payload without a request id needs its "
                             "own envelope id")
        etype = EVENTS[payload.event_name]
        return cls(type=etype, id=derived_id(payload.request_id, etype.name),
                   source=f"/quotaflow/{step}", tenant=payload.tenant, payload=payload)

    @property
    def version(self) -> int:
        return self.writer_version or self.type.version

    def to_cloudevent(self) -> CloudEvent:
        value = avro.encode(self.type.name, self.version, to_record(self.payload))
        return CloudEvent(
            attributes={
                "specversion": "1.0",
                "id": self.id,
                "source": self.source,
                "type": self.type.ce_type,
                "time": self.time,
                "datacontenttype": AVRO_CONTENT_TYPE,
                "dataschema": dataschema_uri(self.type.name, self.version),
                "partitionkey": self.tenant,
            },
            data=value,
        )


def derived_id(request_id: str, event_name: str) -> str:
    """Output event ids derive from the request and the event, so redelivery repeats them."""
    return f"{request_id}/{event_name}"


def to_kafka(event: Envelope) -> ce_kafka.KafkaMessage:
    return ce_kafka.to_binary(event.to_cloudevent(), _RAW)


def to_http(event: Envelope) -> tuple[dict[str, str], bytes]:
    message = ce_http.to_binary(event.to_cloudevent(), _RAW)
    return dict(message.headers), message.body


def _from_cloudevent(ce: BaseCloudEvent) -> Envelope:
    ce_type = ce.get_type()
    etype = BY_CE_TYPE.get(ce_type)
    if etype is None:
        raise UndecodableEvent(f"unknown event type {ce_type!r}")
    if ce.get_datacontenttype() != AVRO_CONTENT_TYPE:
        raise UndecodableEvent(
            f"content type {ce.get_datacontenttype()!r} is not {AVRO_CONTENT_TYPE}")
    uri = ce.get_dataschema()
    if not uri:
        raise UndecodableEvent("missing ce_dataschema: the writer schema is unknown")
    try:
        name, version = parse_dataschema(uri)
    except ValueError as exc:
        raise UndecodableEvent(str(exc)) from None
    if name != etype.name:
        raise UndecodableEvent(f"dataschema {uri!r} does not belong to {ce_type!r}")
    raw = ce.get_data()
    if not isinstance(raw, bytes):
        raise UndecodableEvent("event data is not binary Avro")
    try:
        data = avro.decode(name, version, raw)
    except avro.SchemaNotFound as exc:
        raise UndecodableEvent(str(exc)) from None
    except Exception as exc:  # fastavro raises many types on corrupt input
        raise UndecodableEvent(f"Avro decode failed for {name} v{version}: {exc!r}") from None
    try:
        payload = from_record(PAYLOADS[name], data)
    except TypeError as exc:
        raise UndecodableEvent(f"{name} v{version} does not fit its payload: {exc}") from None
    tenant = ce.get_extension("partitionkey") or payload.tenant
    return Envelope(type=etype, id=ce.get_id(), source=ce.get_source(), tenant=str(tenant),
                    payload=payload, time=ce.get_time() or datetime.now(UTC),
                    writer_version=version)


def from_kafka(headers: Mapping[str, Any] | Sequence[tuple[str, Any]] | None,
               key: bytes | str | None, value: bytes | None) -> Envelope:
    pairs = headers.items() if isinstance(headers, Mapping) else (headers or [])
    hdrs = {k: v if isinstance(v, bytes) else str(v or "").encode() for k, v in pairs}
    try:
        ce = ce_kafka.from_binary(ce_kafka.KafkaMessage(headers=hdrs, key=key, value=value or b""),
                                  _RAW)
    except UndecodableEvent:
        raise
    except Exception as exc:
        raise UndecodableEvent(f"not a CloudEvents binary-mode record: {exc}") from None
    return _from_cloudevent(ce)


def from_http(headers: Mapping[str, str], body: bytes) -> Envelope:
    """A binary-mode HTTP CloudEvent with an Avro body, as KafkaSource delivers our records."""
    try:
        ce = ce_http.from_binary(ce_http.HTTPMessage(headers=dict(headers), body=body), _RAW)
    except Exception as exc:
        raise UndecodableEvent(f"not a CloudEvents binary-mode request: {exc}") from None
    return _from_cloudevent(ce)
