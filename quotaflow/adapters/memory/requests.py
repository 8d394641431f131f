"""An in-memory `RequestStore` with the guards of the PostgreSQL one: `reserved` only from
`queued`, a terminal status only from `queued` or `reserved`, a request visible only to its
own tenant."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from quotaflow.adapters.clock import SystemClock
from quotaflow.ports import Clock, FinalRecord, Inserted, NewRequest, RequestView

OPEN = ("queued", "reserved")


@dataclass(frozen=True)
class _Row:
    tenant: str
    payload_hash: str
    view: RequestView


class MemoryRequestStore:
    """Requests in a dictionary by request id; times from `clock` (the system's by default)."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or SystemClock()
        self._rows: dict[str, _Row] = {}

    def insert(self, request: NewRequest) -> Inserted:
        """Store a new request as `queued`; a known id keeps what was stored first."""
        row = self._rows.get(request.request_id)
        if row is not None:
            return Inserted(False, row.payload_hash, row.view.status)
        now = self.clock.now()
        self._rows[request.request_id] = _Row(request.tenant, request.payload_hash, RequestView(
            request_id=request.request_id, status="queued", output=None, prompt_tokens=None,
            completion_tokens=None, reserved_tokens=None, charged_tokens=None,
            model=request.model, model_version=None, reason=None, created_at=now,
            updated_at=now))
        return Inserted(True, request.payload_hash, "queued")

    def mark_reserved(self, request_id: str, reserved_tokens: int, prompt_tokens: int) -> None:
        """A `queued` request is now `reserved`; any later status is left alone."""
        self._update(request_id, ("queued",), status="reserved",
                     reserved_tokens=reserved_tokens, prompt_tokens=prompt_tokens)

    def finish(self, records: Sequence[FinalRecord]) -> None:
        """Write terminal states; a field left None keeps what was stored."""
        for r in records:
            optional = {"output": r.output, "prompt_tokens": r.prompt_tokens,
                        "completion_tokens": r.completion_tokens,
                        "reserved_tokens": r.reserved_tokens, "model_version": r.model_version}
            self._update(r.request_id, OPEN, status=r.status, reason=r.reason,
                         charged_tokens=r.charged_tokens,
                         **{k: v for k, v in optional.items() if v is not None})

    def fetch(self, tenant: str, request_id: str) -> RequestView | None:
        """The tenant's own request, or None."""
        row = self._rows.get(request_id)
        return row.view if row is not None and row.tenant == tenant else None

    def _update(self, request_id: str, only_from: tuple[str, ...], **fields: object) -> None:
        row = self._rows.get(request_id)
        if row is None or row.view.status not in only_from:
            return
        view = replace(row.view, **fields, updated_at=self.clock.now())  # type: ignore[arg-type]
        self._rows[request_id] = replace(row, view=view)
