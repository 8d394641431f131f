"""An in-memory `RequestStore` (and `OpenRequests`) with the guards of the PostgreSQL one: a
status only moves forward (`reserved` only from `queued`, `rejected` only from `queued`, the
other terminal ones from `queued` or `reserved`), a request visible only to its own tenant."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from quotaflow.adapters.clock import SystemClock
from quotaflow.events.status import OPEN_STATUSES, RequestStatus
from quotaflow.ports import (
    Clock,
    FinalRecord,
    Inserted,
    NewRequest,
    OpenRequest,
    RequestView,
    ReservedMark,
)

OPEN = OPEN_STATUSES


def moves_from(status: RequestStatus) -> tuple[RequestStatus, ...]:
    """The statuses a request may take `status` from: a reserved request was accepted by the
    ledger, so it can no longer be rejected."""
    return ((RequestStatus.QUEUED,) if status in (RequestStatus.RESERVED, RequestStatus.REJECTED)
            else OPEN)


@dataclass(frozen=True)
class _Row:
    tenant: str
    key_id: str
    payload_hash: str
    payload: Mapping[str, Any]
    view: RequestView
    redrives: int = 0
    redriven_at: datetime | None = None


class MemoryRequestStore:
    """Requests in a dictionary by request id; times from `clock` (the system's by default)."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or SystemClock()
        self._rows: dict[str, _Row] = {}

    def insert(self, request: NewRequest) -> Inserted:
        """Store a new request as `queued`; a known id keeps what was stored first."""
        row = self._rows.get(request.request_id)
        if row is not None:
            return Inserted(False, row.payload_hash, row.view.status, row.view.created_at)
        self._rows[request.request_id] = _Row(
            request.tenant, request.key_id, request.payload_hash, dict(request.payload),
            RequestView(request_id=request.request_id, status=RequestStatus.QUEUED, output=None,
                        prompt_tokens=None, completion_tokens=None, reserved_tokens=None,
                        charged_tokens=None, model=request.model, model_version=None,
                        reason=None, created_at=request.admitted_at,
                        updated_at=request.admitted_at))
        return Inserted(True, request.payload_hash, RequestStatus.QUEUED, request.admitted_at)

    def insert_many(self, requests: Sequence[NewRequest]) -> list[Inserted]:
        """`insert` for each request, in order (the same id twice: the later is a resend)."""
        return [self.insert(r) for r in requests]

    def find(self, request_id: str) -> Inserted | None:
        """What is stored for `request_id`, or None."""
        row = self._rows.get(request_id)
        if row is None:
            return None
        return Inserted(False, row.payload_hash, row.view.status, row.view.created_at)

    def mark_reserved(self, marks: Sequence[ReservedMark]) -> None:
        """Each `queued` request is now `reserved`; any later status is left alone."""
        for m in marks:
            self._update(m.request_id, moves_from(RequestStatus.RESERVED),
                         status=RequestStatus.RESERVED,
                         reserved_tokens=m.reserved_tokens, prompt_tokens=m.prompt_tokens)

    def finish(self, records: Sequence[FinalRecord]) -> None:
        """Write terminal states; a field left None keeps what was stored."""
        for r in records:
            optional = {"output": r.output, "prompt_tokens": r.prompt_tokens,
                        "completion_tokens": r.completion_tokens,
                        "reserved_tokens": r.reserved_tokens, "model_version": r.model_version}
            self._update(r.request_id, moves_from(r.status), status=r.status, reason=r.reason,
                         charged_tokens=r.charged_tokens,
                         **{k: v for k, v in optional.items() if v is not None})

    def fetch(self, tenant: str, request_id: str) -> RequestView | None:
        """The tenant's own request, or None."""
        row = self._rows.get(request_id)
        return row.view if row is not None and row.tenant == tenant else None

    def recent(self, tenant: str, limit: int) -> list[RequestView]:
        """The tenant's `limit` most recent requests, newest first."""
        own = [row.view for row in self._rows.values() if row.tenant == tenant]
        own.sort(key=lambda v: (v.created_at, v.request_id), reverse=True)
        return own[:limit]

    def open_since(self, cutoff: datetime, limit: int) -> list[OpenRequest]:
        """Open requests with no progress and no re-drive since `cutoff`, stalest first."""
        idle = sorted((_touched(row), rid) for rid, row in self._rows.items()
                      if row.view.status in OPEN and _touched(row) < cutoff)
        return [self._open(rid) for _, rid in idle[:limit]]

    def note_redriven(self, request_ids: Sequence[str]) -> None:
        """Count a re-drive of each request, now."""
        now = self.clock.now()
        for rid in request_ids:
            row = self._rows.get(rid)
            if row is not None:
                self._rows[rid] = replace(row, redrives=row.redrives + 1, redriven_at=now)

    def _open(self, request_id: str) -> OpenRequest:
        row = self._rows[request_id]
        v = row.view
        return OpenRequest(request_id, row.tenant, row.key_id, v.status, row.payload,
                           v.created_at, v.reserved_tokens, v.prompt_tokens, row.redrives)

    def _update(self, request_id: str, only_from: tuple[RequestStatus, ...],
                **fields: object) -> None:
        row = self._rows.get(request_id)
        if row is None or row.view.status not in only_from:
            return
        view = replace(row.view, **fields, updated_at=self.clock.now())  # type: ignore[arg-type]
        self._rows[request_id] = replace(row, view=view)


def _touched(row: _Row) -> datetime:
    """When the request last moved or was re-driven."""
    at = row.view.updated_at
    return max(at, row.redriven_at) if row.redriven_at is not None else at
