"""One frozen, typed payload per event type: the data of a record, field for field as its Avro
schema in `schemas/<name>/v<N>.avsc` (tests/contract checks each class against its schema).

Handlers read and build these instead of dictionaries; `to_record` and `from_record` convert to
and from the plain dictionaries the Avro codec reads and writes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, TypeVar

from quotaflow.events.status import FinishReason, LedgerKind, RequestStatus, SettlementStatus


@dataclass(frozen=True)
class Message:
    """One chat message: `role` is system, user or assistant."""

    role: str
    content: str


@dataclass(frozen=True)
class RequestPayload:
    """What the client asked for, carried from admit to infer."""

    request_id: str
    tenant: str
    key_id: str
    model: str
    messages: tuple[Message, ...]
    max_tokens: int
    temperature: float | None
    top_p: float | None
    seed: int | None
    admitted_at_ms: datetime  # Avro timestamp-millis: a timezone-aware datetime in Python
    # v2 (keyword-only, so the steps' own fields may follow without defaults): generation ends
    # before the first stop sequence; `stream` asks infer to publish the token deltas.
    stop: tuple[str, ...] = dataclasses.field(default=(), kw_only=True)
    stream: bool = dataclasses.field(default=False, kw_only=True)

    def request_fields(self) -> dict[str, Any]:
        """The client request's fields, to carry into the next step's payload."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(RequestPayload)}


@dataclass(frozen=True)
class Admitted(RequestPayload):
    event_name: ClassVar[str] = "admitted"


@dataclass(frozen=True)
class Estimated(RequestPayload):
    event_name: ClassVar[str] = "estimated"
    prompt_tokens: int
    estimate_tokens: int  # the worst case to reserve: prompt_tokens + max_tokens


@dataclass(frozen=True)
class Reserved(RequestPayload):
    event_name: ClassVar[str] = "reserved"
    prompt_tokens: int
    reserved_tokens: int
    period: str
    ledger_seq: int  # the TokensReserved event's sequence number


@dataclass(frozen=True)
class Rejected:
    """A request that ends without inference: refused by the ledger, or unprocessable before
    anything was reserved (then `period` and `ledger_seq` are None: no ledger event)."""

    event_name: ClassVar[str] = "rejected"
    request_id: str
    tenant: str
    requested_tokens: int
    reason: str
    period: str | None = None
    ledger_seq: int | None = None


@dataclass(frozen=True)
class Completed:
    event_name: ClassVar[str] = "completed"
    request_id: str
    tenant: str
    reserved_tokens: int
    text: str
    prompt_tokens: int
    completion_tokens: int
    model: str
    model_version: str
    latency_ms: float
    finish_reason: FinishReason = FinishReason.UNKNOWN
    batch_size: int = 1
    device: str = "cpu"


@dataclass(frozen=True)
class Failed:
    event_name: ClassVar[str] = "failed"
    request_id: str
    tenant: str
    reserved_tokens: int
    reason: str


@dataclass(frozen=True)
class Settled:
    """A reservation's end. `text` and the token counts travel on to record, which writes the
    request's final state; settle itself only needs the counts."""

    event_name: ClassVar[str] = "settled"
    request_id: str
    tenant: str
    status: SettlementStatus
    reserved_tokens: int
    charged_tokens: int
    released_tokens: int
    prompt_tokens: int
    completion_tokens: int
    text: str | None
    model: str
    model_version: str
    reason: str | None
    ledger_seq: int


@dataclass(frozen=True)
class Recorded:
    event_name: ClassVar[str] = "recorded"
    request_id: str
    tenant: str
    status: RequestStatus  # the terminal one record wrote


@dataclass(frozen=True)
class LedgerEntry:
    """One committed ledger event, as the outbox relay publishes it for analytics."""

    event_name: ClassVar[str] = "ledger"
    seq: int
    tenant: str
    stream_version: int
    kind: LedgerKind
    request_id: str | None
    period: str
    amount: int
    released: int
    recorded_at_ms: datetime
    # v2: what the event did at the budget levels (quotaflow.ledger.budgets), money in
    # micro-dollars, and the price version a reservation was priced at.
    key_id: str | None = None
    team_id: str | None = None
    usd: int = 0
    usd_released: int = 0
    model: str | None = None
    price_version: int | None = None
    input_tokens: int | None = None


Payload = (Admitted | Estimated | Reserved | Rejected | Completed | Failed | Settled | Recorded
           | LedgerEntry)
PAYLOADS: dict[str, type[Payload]] = {
    cls.event_name: cls for cls in (Admitted, Estimated, Reserved, Rejected, Completed, Failed,
                                    Settled, Recorded, LedgerEntry)}
P = TypeVar("P", bound=Payload)
# Fields the schemas carry as Avro strings and the payloads type as enums (quotaflow.events.status).
ENUM_FIELDS: dict[type, dict[str, type[StrEnum]]] = {
    Completed: {"finish_reason": FinishReason},
    Settled: {"status": SettlementStatus},
    Recorded: {"status": RequestStatus},
    LedgerEntry: {"kind": LedgerKind},
}


def to_record(payload: Payload) -> dict[str, Any]:
    """The Avro record of a payload (messages as a list of dicts)."""
    record = {f.name: getattr(payload, f.name) for f in dataclasses.fields(payload)}
    if "messages" in record:
        record["messages"] = [{"role": m.role, "content": m.content} for m in record["messages"]]
    if "stop" in record:
        record["stop"] = list(record["stop"])
    return record


def from_record(cls: type[P], record: dict[str, Any]) -> P:
    """The payload of a decoded Avro record; fields the class does not know are an error, and
    so is a string that is not one of its enum field's values."""
    values = dict(record)
    for name, enum in ENUM_FIELDS.get(cls, {}).items():
        if name in values:
            values[name] = enum(values[name])
    if "messages" in values:
        values["messages"] = tuple(Message(m["role"], m["content"]) for m in values["messages"])
    if "stop" in values:
        values["stop"] = tuple(values["stop"])
    return cls(**values)
