"""What makes a resend the same request at every step.

A client may send the same event again, the broker may deliver a record twice, and the
reconciler may publish a request again from PostgreSQL. Each step must then answer its first
outcome, so what a step compares (a ledger command's digest) or publishes again (`admitted`) is
built only from what the client sent and what is derived from it deterministically: never from
the time or the process that built it. A timestamp in a digest made a resend a "different
payload" that the ledger refused, and the request was recorded rejected though charged."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from quotaflow.events.payloads import Admitted, Message, RequestPayload
from quotaflow.ports import payload_hash


def to_millis(at: datetime) -> datetime:
    """`at` cut to the millisecond, as Avro's timestamp-millis carries it."""
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


def admitted_payload(request_id: str, tenant: str, key_id: str, data: Mapping[str, Any],
                     admitted_at: datetime) -> Admitted:
    """The `admitted` payload of a stored request: admit's first publish, a resend's and the
    reconciler's are all this one, field for field."""
    return Admitted(
        request_id=request_id, tenant=tenant, key_id=key_id, model=data["model"],
        messages=tuple(Message(m["role"], m["content"]) for m in data["messages"]),
        max_tokens=int(data["max_tokens"]), temperature=_float(data.get("temperature")),
        top_p=_float(data.get("top_p")), seed=_int(data.get("seed")),
        admitted_at_ms=to_millis(admitted_at), stop=tuple(data.get("stop") or ()),
        stream=bool(data.get("stream")))


def client_fields(p: RequestPayload) -> dict[str, Any]:
    """What the client asked for, normalized as it travels (numbers as Avro decodes them)."""
    return {"model": p.model, "messages": [[m.role, m.content] for m in p.messages],
            "max_tokens": int(p.max_tokens), "temperature": _float(p.temperature),
            "top_p": _float(p.top_p), "seed": _int(p.seed), "stop": list(p.stop),
            "stream": p.stream}


def reserve_digest(p: RequestPayload, estimate_tokens: int) -> str:
    """The idempotency digest of reserving `p`'s worst case: the client's request and the
    estimate (the same tokenizer counts the same prompt the same). Not the key it came with,
    nor when it was admitted."""
    return payload_hash({**client_fields(p), "estimate_tokens": int(estimate_tokens)})


def end_digest(request_id: str) -> str:
    """The idempotency digest of ending a request's reservation, the same for every ending:
    a reservation ends once, so whatever ends it again (a redelivery, a second inference after
    a lost `settled`, the reconciler at the deadline) gets the first ending's outcome, never a
    conflict that would be recorded as a failure while the ledger charged."""
    return payload_hash({"ends": request_id})


def _float(v: Any) -> float | None:
    return None if v is None else float(v)


def _int(v: Any) -> int | None:
    return None if v is None else int(v)
