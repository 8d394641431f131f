"""admit: a client's request becomes a stored `queued` request and the `admitted` payload that
starts the pipeline. `(tenant, source, id)` is the idempotency key: the same event sent again is
the same request; the same key with another payload is a conflict. The HTTP door
(`quotaflow.door`) authenticates, parses and rate-limits before, and publishes after."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from events.payloads import Admitted
from quotaflow.ports import Clock, NewRequest, Principal, RequestStore, payload_hash
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


def request_id_for(tenant: str, source: str, ce_id: str) -> str:
    """(tenant, source, id) is the idempotency key of a client request."""
    return str(uuid.uuid5(_NAMESPACE, f"{tenant}\x00{source}\x00{ce_id}"))


def admit(principal: Principal, request: ClientRequest, ports: AdmitPorts,
          limits: Callable[[], None] = lambda: None) -> Admission:
    """Store the request with its data and admission time; raise `IdempotencyConflict` on a
    changed payload. `limits` (the rate limit and quota pre-check, which raise to refuse)
    applies to a new request only: a resend of one already accepted gets its first answer,
    never a new refusal."""
    request_id = request_id_for(principal.tenant, request.source, request.ce_id)
    data = dict(request.data)
    digest = payload_hash(data)
    stored = ports.requests.find(request_id)
    if stored is None:
        limits()
        stored = ports.requests.insert(NewRequest(
            request_id, principal.tenant, principal.key_id, request.source, request.ce_id,
            digest, data["model"], data, to_millis(ports.clock.now())))
    if stored.payload_hash != digest:
        raise IdempotencyConflict(f"event id {request.ce_id!r} from source {request.source!r} "
                                  "was already sent with a different payload")
    if not stored.created and stored.status != "queued":
        return Admission(request_id, False, [])
    # A resend of a request still queued is published again (the first publish may have been
    # lost), identical to the first: same data, the first admission's time. Every step
    # downstream then answers its first outcome.
    return Admission(request_id, stored.created, [admitted_payload(
        request_id, principal.tenant, principal.key_id, data, stored.admitted_at)])
