"""The request read model in PostgreSQL (table `requests`): what `GET /v1/requests/{id}`
answers. A status only moves forward: `queued` -> `reserved` -> a terminal one."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import psycopg

from quotaflow.ports import FinalRecord, Inserted, NewRequest, RequestView

# A field a record leaves None keeps what was stored (a rejection carries no usage).
_FINISH = (
    "UPDATE requests SET status = %(status)s, reason = %(reason)s, "
    "charged_tokens = %(charged_tokens)s, output = coalesce(%(output)s, output), "
    "prompt_tokens = coalesce(%(prompt_tokens)s, prompt_tokens), "
    "completion_tokens = coalesce(%(completion_tokens)s, completion_tokens), "
    "reserved_tokens = coalesce(%(reserved_tokens)s, reserved_tokens), "
    "model_version = coalesce(%(model_version)s, model_version), updated_at = now() "
    "WHERE request_id = %(request_id)s AND status IN ('queued', 'reserved')")
_VIEW_COLUMNS = ("request_id, status, output, prompt_tokens, completion_tokens, "
                 "reserved_tokens, charged_tokens, model, model_version, reason, created_at, "
                 "updated_at")


class PostgresRequestStore:
    """The `RequestStore` on one connection; each call commits what it wrote (`finish` in one
    transaction), unless the caller holds a transaction open around it."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    @classmethod
    def connect(cls, url: str) -> PostgresRequestStore:
        return cls(psycopg.connect(url, autocommit=True))

    def close(self) -> None:
        self.conn.close()

    def insert(self, request: NewRequest) -> Inserted:
        """Insert a queued request; a known id keeps what was stored first."""
        r = request
        row = self._execute(
            "INSERT INTO requests (request_id, tenant_id, key_id, source, ce_id, payload_hash, "
            "status, model) VALUES (%s, %s, %s, %s, %s, %s, 'queued', %s) "
            "ON CONFLICT (request_id) DO NOTHING RETURNING payload_hash, status",
            (r.request_id, r.tenant, r.key_id, r.source, r.ce_id, r.payload_hash, r.model))
        if row is not None:
            return Inserted(True, row[0], row[1])
        row = self._execute("SELECT payload_hash, status FROM requests WHERE request_id = %s",
                            (r.request_id,))
        if row is None:  # deleted between the two statements: nothing to answer from
            raise LookupError(f"request {r.request_id} vanished while being stored")
        return Inserted(False, row[0], row[1])

    def mark_reserved(self, request_id: str, reserved_tokens: int, prompt_tokens: int) -> None:
        """A `queued` request is now `reserved`; any later status is left alone."""
        self._execute("UPDATE requests SET status = 'reserved', reserved_tokens = %s, "
                      "prompt_tokens = %s, updated_at = now() "
                      "WHERE request_id = %s AND status = 'queued'",
                      (reserved_tokens, prompt_tokens, request_id))

    def finish(self, records: Sequence[FinalRecord]) -> None:
        """Write terminal states in one transaction; a terminal status is never overwritten."""
        if not records:
            return
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.executemany(_FINISH, [dataclasses.asdict(r) for r in records])

    def fetch(self, tenant: str, request_id: str) -> RequestView | None:
        """The tenant's own request, or None."""
        row = self._execute(
            f"SELECT {_VIEW_COLUMNS} FROM requests WHERE request_id = %s AND tenant_id = %s",
            (request_id, tenant))
        return RequestView(*row) if row is not None else None

    def _execute(self, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """One statement, committed: alone in autocommit (no BEGIN/COMMIT round trips on the
        reserve step's path), else in a transaction of its own or within the caller's."""
        if self.conn.autocommit:
            cur = self.conn.execute(sql, params)
        else:
            with self.conn.transaction():
                cur = self.conn.execute(sql, params)
        return cur.fetchone() if cur.description else None
