"""admit: a client's request becomes a stored `queued` request and the `admitted` payload that
starts the pipeline. `(tenant, source, id)` is the idempotency key: the same event sent again is
the same request; the same key with another payload is a conflict.

Its path: a client calls the door (`quotaflow/runtime/door/`: `cloudevents_api` or
`openai_api`), which authenticates and parses, then `accept.py` calls `admit` here, screening
the request on the way (rate limit, quota pre-check and a fast record of recent acceptances, in
one round trip) and publishing the `admitted` payload after.

admit has no `Step` (`quotaflow.runtime.step`), unlike the five steps after it: a `Step` is a
handler over payloads read from Kafka topics, run by the Kafka worker or the KafkaSource HTTP
entry, retried and dead-lettered per record. admit reads no topic: its input is an HTTP request
with a principal, it answers the client synchronously (202, or a 4xx naming what was wrong), and
it has nothing to dead-letter; a `Step` for it would be one that nothing can run."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from quotaflow.events.payloads import Admitted
from quotaflow.events.status import RequestStatus
from quotaflow.ports import Clock, Inserted, NewRequest, Principal, RequestStore, payload_hash
from quotaflow.runtime.idempotency import admitted_payload, to_millis

_NAMESPACE = uuid.UUID("5b0f6c1e-3f7a-4d0e-9a51-6f1e0c2b7a10")


class ClientRequest(Protocol):
    """A validated client request: its CloudEvents source and id, and the normalized data."""

    @property
    def source(self) -> str: ...

    @property
    def ce_id(self) -> str: ...

    @property
    def data(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True)
class AdmitPorts:
    requests: RequestStore
    clock: Clock  # the ledger's clock: the admission time and the billing period agree with it


@dataclass(frozen=True)
class Admission:
    """The request's id, whether this call created it, and the payloads to publish."""

    request_id: str
    created: bool
    admitted: list[Admitted]


class IdempotencyConflict(Exception):
    """The client's event id was already used by this source with a different payload."""


@dataclass(frozen=True)
class Screened:
    """What screening a request found: the payload hash a recent acceptance of its id
    recorded (a resend, not limited), or for a new request why the limits refuse it."""

    known_hash: str | None = None
    refusal: Exception | None = None


def let_through(_request_id: str, _payload_hash: str) -> Screened:
    """No limits and no record: every request is screened as new and within its limits."""
    return Screened()


def request_id_for(tenant: str, source: str, ce_id: str) -> str:
    """(tenant, source, id) is the idempotency key of a client request."""
    return str(uuid.uuid5(_NAMESPACE, f"{tenant}\x00{source}\x00{ce_id}"))


def admit(principal: Principal, request: ClientRequest, ports: AdmitPorts,
          screen: Callable[[str, str], Screened] = let_through) -> Admission:
    """Store the request with its data and admission time; raise `IdempotencyConflict` on a
    changed payload. `screen(request_id, payload_hash)` applies the rate limit and quota
    pre-check to a new request only: a resend of one already accepted gets its first answer,
    never a new refusal. The store is the authority: a refusal, or a record naming another
    payload, is checked against it (a lost record must not refuse a resend, and a record of a
    request whose insert failed must not refuse that id's next payload)."""
    request_id = request_id_for(principal.tenant, request.source, request.ce_id)
    data = dict(request.data)
    digest = payload_hash(data)
    screened = screen(request_id, digest)
    stored: Inserted | None = None
    if screened.refusal is not None or screened.known_hash not in (None, digest):
        stored = ports.requests.find(request_id)
        if stored is None and screened.refusal is not None:
            raise screened.refusal
    # Recorded with another payload that is not stored: its insert failed, or has not yet
    # committed. Either way the insert decides: the first row stored for the id wins, and a
    # payload that lost gets its 409 below. (The rate limit counted the id once, with the
    # first payload.)
    if stored is None:
        stored = ports.requests.insert(NewRequest(
            request_id, principal.tenant, principal.key_id, request.source, request.ce_id,
            digest, data["model"], data, to_millis(ports.clock.now())))
    if stored.payload_hash != digest:
        raise _conflict(request)
    if not stored.created and stored.status != RequestStatus.QUEUED:
        return Admission(request_id, False, [])
    # A resend of a request still queued is published again (the first publish may have been
    # lost), identical to the first: same data, the first admission's time. Every step
    # downstream then answers its first outcome.
    return Admission(request_id, stored.created, [admitted_payload(
        request_id, principal.tenant, principal.key_id, data, stored.admitted_at)])


def _conflict(request: ClientRequest) -> IdempotencyConflict:
    return IdempotencyConflict(f"event id {request.ce_id!r} from source {request.source!r} "
                               "was already sent with a different payload")
