"""The request records' vocabulary: what admit stores (`NewRequest` -> `Inserted`), what record
writes (`FinalRecord`), what a client reads (`RequestView`), what the reconciler re-drives
(`OpenRequest`), and the two ports over them. `quotaflow.ports` re-exports them all; steps
import them from there."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from quotaflow.events.status import RequestStatus


@dataclass(frozen=True)
class NewRequest:
    """A client request as admit stores it, before any step has seen it."""

    request_id: str
    tenant: str
    key_id: str
    source: str
    ce_id: str
    payload_hash: str
    model: str
    # The client's normalized data: PostgreSQL is the system of record, so a request whose
    # messages were lost can be published again from the database alone.
    payload: Mapping[str, Any]
    admitted_at: datetime  # to the millisecond, as `admitted_at_ms` travels


@dataclass(frozen=True)
class ReservedMark:
    """A request the ledger reserved for, as reserve marks it: `queued` -> `reserved`."""

    request_id: str
    reserved_tokens: int
    prompt_tokens: int


@dataclass(frozen=True)
class Inserted:
    """What storing a request found: whether it is new, and the stored hash, status and
    admission time (a resend is published with the first admission's time)."""

    created: bool
    payload_hash: str
    status: RequestStatus
    admitted_at: datetime


@dataclass(frozen=True)
class FinalRecord:
    """A request's terminal state, as record writes it. A status only moves forward and a
    terminal one is never overwritten: `rejected` only from `queued` (a reserved request was
    accepted by the ledger), the others from `queued` or `reserved`."""

    request_id: str
    status: RequestStatus  # completed, failed, expired or rejected
    reason: str | None
    charged_tokens: int
    output: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    reserved_tokens: int | None = None
    model_version: str | None = None


@dataclass(frozen=True)
class RequestView:
    """What `GET /v1/requests/{id}` answers."""

    request_id: str
    status: RequestStatus
    output: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    reserved_tokens: int | None
    charged_tokens: int | None
    model: str
    model_version: str | None
    reason: str | None
    created_at: datetime
    updated_at: datetime


class RequestStore(Protocol):
    """The request read model: each request's status, usage and output."""

    def insert(self, request: NewRequest) -> Inserted: ...

    def find(self, request_id: str) -> Inserted | None:
        """What is stored for a request id (`created` False), or None when it is new."""
        ...

    def mark_reserved(self, marks: Sequence[ReservedMark]) -> None:
        """Each `queued` request is now `reserved`, all or none; any later status is left
        alone."""
        ...

    def finish(self, records: Sequence[FinalRecord]) -> None:
        """Write terminal states, all or none."""
        ...

    def fetch(self, tenant: str, request_id: str) -> RequestView | None:
        """The tenant's own request, or None (another tenant's request is never visible)."""
        ...

    def recent(self, tenant: str, limit: int) -> list[RequestView]:
        """The tenant's `limit` most recent requests, newest first."""
        ...


@dataclass(frozen=True)
class OpenRequest:
    """A `queued` or `reserved` request as the reconciler sees it: enough to publish it again
    (`payload` is None for a request stored before payloads were kept)."""

    request_id: str
    tenant: str
    key_id: str
    status: RequestStatus
    payload: Mapping[str, Any] | None
    admitted_at: datetime
    reserved_tokens: int | None
    prompt_tokens: int | None
    redrives: int


class OpenRequests(Protocol):
    """The request records as the reconciler reads and ends them."""

    def open_since(self, cutoff: datetime, limit: int) -> list[OpenRequest]:
        """Open requests with no progress and no re-drive since `cutoff`, stalest first."""
        ...

    def note_redriven(self, request_ids: Sequence[str]) -> None:
        """Count a re-drive of each request, now."""
        ...

    def finish(self, records: Sequence[FinalRecord]) -> None:
        """Write terminal states (as `RequestStore.finish`)."""
        ...
