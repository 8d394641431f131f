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

from quotaflow.events import avro, received
from quotaflow.events.catalog import BY_CE_TYPE, EVENTS, EventType, dataschema_uri, parse_dataschema
from quotaflow.events.payloads import PAYLOADS, Payload, from_record, to_record

AVRO_CONTENT_TYPE = "application/avro"


class UndecodableEvent(ValueError):
    """A record that can never be decoded (unknown type, schema, or bad payload). Its text is
    ours, naming what is wrong, and may reach a client; `internal` is what a library said (the
    CloudEvents SDK's or fastavro's own text), for the log only."""

    def __init__(self, detail: str, internal: str | None = None) -> None:
        super().__init__(detail)
        self.internal = internal


class _RawBytes:
    """A CloudEvents `Format` that leaves the data as raw bytes: the Avro value is encoded
    and decoded by `quotaflow.events.avro`, which needs the writer schema from `ce_dataschema`."""

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


def _rfc3339(t: datetime) -> str:
    text = t.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def to_kafka(event: Envelope) -> ce_kafka.KafkaMessage:
    """The record of `event` in the Kafka binding's binary mode, key = partitionkey = tenant.

    Built directly rather than through the SDK's `CloudEvent` and `to_binary`, which validate
    every attribute on every construction: that was about a third of each step's CPU (profile
    in BENCHMARKS.md). `tests/contract/test_wire_contract.py` proves the result equal, header
    for header, to the SDK's `to_binary` of `event.to_cloudevent()`."""
    value = avro.encode(event.type.name, event.version, to_record(event.payload))
    headers = {
        "ce_specversion": b"1.0",
        "ce_id": event.id.encode(),
        "ce_source": event.source.encode(),
        "ce_type": event.type.ce_type.encode(),
        "ce_time": _rfc3339(event.time).encode(),
        "content-type": AVRO_CONTENT_TYPE.encode(),
        "ce_dataschema": dataschema_uri(event.type.name, event.version).encode(),
        "ce_partitionkey": event.tenant.encode(),
    }
    return ce_kafka.KafkaMessage(headers=headers, key=event.tenant, value=value)


def to_http(event: Envelope) -> tuple[dict[str, str], bytes]:
    message = ce_http.to_binary(event.to_cloudevent(), _RAW)
    return dict(message.headers), message.body


@dataclass(frozen=True)
class _Attributes:
    """The CloudEvents attributes a record needs, from either binding."""

    id: str
    source: str
    type: str
    time: datetime | None
    datacontenttype: str | None
    dataschema: str | None
    partitionkey: str | None


def _decode(a: _Attributes, raw: object) -> Envelope:
    etype = BY_CE_TYPE.get(a.type)
    if etype is None:
        raise UndecodableEvent(f"unknown event type {a.type!r}")
    if a.datacontenttype != AVRO_CONTENT_TYPE:
        raise UndecodableEvent(f"content type {a.datacontenttype!r} is not {AVRO_CONTENT_TYPE}")
    if not a.dataschema:
        raise UndecodableEvent("missing ce_dataschema: the writer schema is unknown")
    try:
        name, version = parse_dataschema(a.dataschema)
    except ValueError as exc:
        raise UndecodableEvent(str(exc)) from None
    if name != etype.name:
        raise UndecodableEvent(f"dataschema {a.dataschema!r} does not belong to {a.type!r}")
    if not isinstance(raw, bytes):
        raise UndecodableEvent("event data is not binary Avro")
    try:
        data = avro.decode(name, version, raw)
    except avro.SchemaNotFound as exc:
        raise UndecodableEvent(f"no schema {name} v{version} is known", str(exc)) from None
    except avro.NotOneRecord as exc:  # our own words: what follows the record, or no record
        raise UndecodableEvent(f"Avro decode failed for {name} v{version}: {exc}") from None
    except Exception as exc:  # fastavro raises many types on corrupt input: its text is logged
        raise UndecodableEvent(f"Avro decode failed for {name} v{version}: the data is not "
                               "such a record", repr(exc)) from None
    try:
        payload = from_record(PAYLOADS[name], data)
    except ValueError as exc:  # a status or kind no enum has: the message names the value
        raise UndecodableEvent(f"{name} v{version} does not fit its payload: {exc}") from None
    except TypeError as exc:  # its text names our classes' signatures: for the log only
        raise UndecodableEvent(f"{name} v{version} does not fit its payload",
                               str(exc)) from None
    return Envelope(type=etype, id=a.id, source=a.source, tenant=a.partitionkey or payload.tenant,
                    payload=payload, time=a.time or datetime.now(UTC), writer_version=version)


def _from_cloudevent(ce: BaseCloudEvent) -> Envelope:
    partitionkey = ce.get_extension("partitionkey")
    return _decode(_Attributes(ce.get_id(), ce.get_source(), ce.get_type(), ce.get_time(),
                               ce.get_datacontenttype(), ce.get_dataschema(),
                               str(partitionkey) if partitionkey else None), ce.get_data())


def _header_text(name: str, value: Any) -> str:
    raw = value if isinstance(value, bytes) else str(value or "").encode()
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise UndecodableEvent(f"header {name} is not UTF-8") from None


def from_kafka(headers: Mapping[str, Any] | Sequence[tuple[str, Any]] | None,
               key: bytes | str | None, value: bytes | None) -> Envelope:
    """The envelope in a binary-mode record; `UndecodableEvent` naming what is wrong.
    Read directly, as the SDK's `from_binary` reads it (the key is the partitionkey), for the
    reason `to_kafka` says; the wire contract test checks the two agree."""
    pairs = headers.items() if isinstance(headers, Mapping) else (headers or [])
    found: dict[str, str] = {}
    for name, raw in pairs:
        lower = name.lower()
        if lower.startswith("ce_") or lower == "content-type":
            found[lower] = _header_text(name, raw)
    if found.get("ce_specversion") != "1.0":
        raise UndecodableEvent("not a CloudEvents 1.0 binary-mode record: ce_specversion is "
                               f"{found.get('ce_specversion')!r}")
    missing = [h for h in ("ce_id", "ce_source", "ce_type") if not found.get(h)]
    if missing:
        raise UndecodableEvent(f"not a CloudEvents binary-mode record: missing {missing}")
    time = None
    if found.get("ce_time"):
        try:
            time = datetime.fromisoformat(found["ce_time"])
        except ValueError:
            raise UndecodableEvent(f"ce_time {found['ce_time']!r} is not RFC 3339") from None
        if time.tzinfo is None:
            raise UndecodableEvent(f"ce_time {found['ce_time']!r} has no time zone")
    if key is not None:
        partitionkey: str | None = key.decode(errors="replace") if isinstance(key, bytes) else key
    else:
        partitionkey = found.get("ce_partitionkey")
    return _decode(_Attributes(found["ce_id"], found["ce_source"], found["ce_type"], time,
                               found.get("content-type"), found.get("ce_dataschema"),
                               partitionkey), value or b"")


def from_http(headers: Mapping[str, str], body: bytes) -> Envelope:
    """A binary-mode HTTP CloudEvent with an Avro body, as KafkaSource delivers our records."""
    try:
        ce = ce_http.from_binary(ce_http.HTTPMessage(headers=dict(headers), body=body), _RAW)
    except Exception as exc:  # the SDK's text names its own classes: for the log only
        raise UndecodableEvent(received.binary_error(headers), f"{type(exc).__name__}: {exc}"
                               ) from None
    return _from_cloudevent(ce)

