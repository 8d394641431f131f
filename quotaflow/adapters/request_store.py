"""The request records in PostgreSQL (table `requests`), the system of record of every
admitted request: what `GET /v1/requests/{id}` answers, and what the reconciler re-drives.
A status only moves forward: `queued` -> `reserved` -> a terminal one; `rejected` only from
`queued`; a terminal status is never overwritten."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal, overload

import psycopg
from psycopg.types.json import Jsonb

from quotaflow.adapters.group_commit import GroupCommitter
from quotaflow.adapters.postgres import OnConnection
from quotaflow.events.status import RequestStatus
from quotaflow.ports import (
    FinalRecord,
    Inserted,
    NewRequest,
    OpenRequest,
    RequestView,
    ReservedMark,
)

Conn = psycopg.Connection[Any]
# A stored status as its enum member: a lookup costs a tenth of `RequestStatus(...)`. The SQL
# below spells the statuses out; tests/unit/test_status_enums.py holds them to the enum.
_STATUS = {s.value: s for s in RequestStatus}.__getitem__

# A batch of moves in one statement, its rows passed as one JSON array (as `_INSERT_MANY`);
# one statement a row cost each row a bind, an execution and a round of psycopg. Its generic
# plan probes the primary key even when made on an empty table (tests/ledger/test_hot_plans).
# A field a record leaves None keeps what was stored (a rejection carries no usage).
_FINISH = (
    "UPDATE requests q SET status = m.status, reason = m.reason, "
    "charged_tokens = m.charged_tokens, output = coalesce(m.output, q.output), "
    "prompt_tokens = coalesce(m.prompt_tokens, q.prompt_tokens), "
    "completion_tokens = coalesce(m.completion_tokens, q.completion_tokens), "
    "reserved_tokens = coalesce(m.reserved_tokens, q.reserved_tokens), "
    "model_version = coalesce(m.model_version, q.model_version), updated_at = now() "
    "FROM jsonb_to_recordset(%s::jsonb) AS m(request_id text, status text, reason text, "
    "charged_tokens bigint, output text, prompt_tokens integer, completion_tokens integer, "
    "reserved_tokens bigint, model_version text) WHERE q.request_id = m.request_id "
    "AND (q.status = 'queued' OR (q.status = 'reserved' AND m.status <> 'rejected'))")
# `request_id = ANY(%s)` is never prepared. A generic plan does not know the array's length
# and guesses ten keys: on a table still small when it was made, a scan of the table is the
# cheaper guess, and it stays cached while the table grows (tests/ledger/test_hot_plans.py).
# Planned at each run, on the table as it is, it probes the primary key.
_BY_KEYS = False
_MARK_RESERVED = (
    "UPDATE requests q SET status = 'reserved', reserved_tokens = m.reserved_tokens, "
    "prompt_tokens = m.prompt_tokens, updated_at = now() FROM jsonb_to_recordset(%s::jsonb) "
    "AS m(request_id text, reserved_tokens bigint, prompt_tokens integer) "
    "WHERE q.request_id = m.request_id AND q.status = 'queued'")
_NOTE_REDRIVEN = ("UPDATE requests SET redrives = redrives + 1, redriven_at = now() "
                  "WHERE request_id = ANY(%s)")
_VIEW_COLUMNS = ("request_id, status, output, prompt_tokens, completion_tokens, "
                 "reserved_tokens, charged_tokens, model, model_version, reason, created_at, "
                 "updated_at")
# Many requests in one statement (one commit), passed as one JSON array: one parameter to
# dump instead of a list per column (psycopg dumps arrays element by element in Python, which
# was most of the committer's CPU). It answers only the rows it inserted: those already stored
# are read by key afterwards, and only when there are any (a resend). Reading them in the same
# statement (`WHERE request_id IN (SELECT r FROM u)`) got a plan, cached with the connection
# while the table was small, that scanned the whole table: 2 ms a batch at 5,000 rows, and
# growing with it.
_INSERT_MANY = (
    "INSERT INTO requests (request_id, tenant_id, key_id, source, ce_id, "
    "payload_hash, status, model, payload, created_at, updated_at) "
    "SELECT r, t, k, s, c, h, 'queued', m, p, a, a FROM jsonb_to_recordset(%s::jsonb) "
    "AS u(r text, t text, k text, s text, c text, h text, m text, p jsonb, a timestamptz) "
    "ON CONFLICT (request_id) DO NOTHING RETURNING request_id, payload_hash, status, created_at")
_STORED = ("SELECT request_id, payload_hash, status, created_at FROM requests "
           "WHERE request_id = ANY(%s)")
_OPEN_COLUMNS = ("request_id, tenant_id, key_id, status, payload, created_at, reserved_tokens, "
                 "prompt_tokens, redrives")


class PostgresRequestStore(OnConnection):
    """The `RequestStore` and `OpenRequests` on one connection; each call commits what it
    wrote (`finish` in one transaction), unless the caller holds a transaction open around it;
    or on a connection provider (`OnConnection`)."""

    def insert(self, request: NewRequest) -> Inserted:
        """Insert a queued request with its data, admitted at `request.admitted_at`; a known
        id keeps what was stored first."""
        r = request
        row = self._execute(
            "INSERT INTO requests (request_id, tenant_id, key_id, source, ce_id, payload_hash, "
            "status, model, payload, created_at, updated_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, 'queued', %s, %s, %s, %s) "
            "ON CONFLICT (request_id) DO NOTHING RETURNING payload_hash, status, created_at",
            (r.request_id, r.tenant, r.key_id, r.source, r.ce_id, r.payload_hash, r.model,
             Jsonb(dict(r.payload)), r.admitted_at, r.admitted_at))
        if row is not None:
            return Inserted(True, row[0], _STATUS(row[1]), row[2])
        found = self.find(r.request_id)
        if found is None:  # deleted between the two statements: nothing to answer from
            raise LookupError(f"request {r.request_id} vanished while being stored")
        return found

    def insert_many(self, requests: Sequence[NewRequest]) -> list[Inserted]:
        """`insert` for many requests in one statement and one commit; one answer per
        request, in order. The same id twice is created once: the later one is a resend."""
        if not requests:
            return []
        ids = [r.request_id for r in requests]
        rows_in = json.dumps([{"r": r.request_id, "t": r.tenant, "k": r.key_id, "s": r.source,
                               "c": r.ce_id, "h": r.payload_hash, "m": r.model,
                               "p": dict(r.payload), "a": r.admitted_at.isoformat()}
                              for r in requests])
        stored = {rid: Inserted(True, digest, _STATUS(status), at) for rid, digest, status, at
                  in self._execute(_INSERT_MANY, (rows_in,), every=True)}
        known = [rid for rid in dict.fromkeys(ids) if rid not in stored]
        if known:
            stored.update((rid, Inserted(False, digest, _STATUS(status), at))
                          for rid, digest, status, at
                          in self._execute(_STORED, (known,), every=True, prepare=_BY_KEYS))
        answers: list[Inserted] = []
        for rid in ids:
            got = stored.get(rid)
            if got is None:  # deleted between the two statements: nothing to answer from
                raise LookupError(f"request {rid} vanished while being stored")
            answers.append(got)
            stored[rid] = dataclasses.replace(got, created=False)  # a second one is a resend
        return answers

    def find(self, request_id: str) -> Inserted | None:
        """What is stored for `request_id`, or None."""
        row = self._execute(
            "SELECT payload_hash, status, created_at FROM requests WHERE request_id = %s",
            (request_id,))
        return Inserted(False, row[0], _STATUS(row[1]), row[2]) if row is not None else None

    def mark_reserved(self, marks: Sequence[ReservedMark]) -> None:
        """Each `queued` request is now `reserved`, in one statement; any later status is
        left alone."""
        self._moves(_MARK_RESERVED, [dataclasses.asdict(m) for m in marks])

    def finish(self, records: Sequence[FinalRecord]) -> None:
        """Write terminal states in one statement; a terminal status is never overwritten,
        and a reserved request is never rejected."""
        self._moves(_FINISH, [dataclasses.asdict(r) for r in records])

    def fetch(self, tenant: str, request_id: str) -> RequestView | None:
        """The tenant's own request, or None."""
        row = self._execute(
            f"SELECT {_VIEW_COLUMNS} FROM requests WHERE request_id = %s AND tenant_id = %s",
            (request_id, tenant))
        return RequestView(row[0], _STATUS(row[1]), *row[2:]) if row is not None else None

    def recent(self, tenant: str, limit: int) -> list[RequestView]:
        """The tenant's `limit` most recent requests, newest first."""
        rows = self._execute(
            f"SELECT {_VIEW_COLUMNS} FROM requests WHERE tenant_id = %s "
            "ORDER BY created_at DESC, request_id DESC LIMIT %s", (tenant, limit), every=True)
        return [RequestView(row[0], _STATUS(row[1]), *row[2:]) for row in rows]

    def open_since(self, cutoff: datetime, limit: int) -> list[OpenRequest]:
        """Open requests with no progress and no re-drive since `cutoff`, stalest first."""
        rows = self._execute(
            f"SELECT {_OPEN_COLUMNS} FROM requests WHERE status IN ('queued', 'reserved') "
            "AND greatest(updated_at, redriven_at) < %s "
            "ORDER BY greatest(updated_at, redriven_at) LIMIT %s", (cutoff, limit), every=True)
        return [OpenRequest(row[0], row[1], row[2], _STATUS(row[3]), *row[4:]) for row in rows]

    def note_redriven(self, request_ids: Sequence[str]) -> None:
        """Count a re-drive of each request, now."""
        if request_ids:
            self._execute(_NOTE_REDRIVEN, (list(request_ids),), prepare=_BY_KEYS)

    def _moves(self, sql: str, rows: Sequence[dict[str, Any]]) -> None:
        """`sql` over `rows`, each request's first row only: a request's first move in a
        batch wins, as it would with a statement a row (the next no longer matches). Sorted
        by id: PostgreSQL runs a batch as a loop over the array with an index probe each, so
        two batches lock the rows they share in the same order."""
        first: dict[str, dict[str, Any]] = {}
        for row in rows:
            first.setdefault(row["request_id"], row)
        if first:
            self._execute(sql, (json.dumps([first[k] for k in sorted(first)]),))

    @overload
    def _execute(self, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None: ...

    @overload
    def _execute(self, sql: str, params: tuple[Any, ...], every: Literal[True],
                 prepare: bool | None = None) -> list[tuple[Any, ...]]: ...

    @overload
    def _execute(self, sql: str, params: tuple[Any, ...], every: Literal[False] = False,
                 prepare: bool | None = None) -> tuple[Any, ...] | None: ...

    def _execute(self, sql: str, params: tuple[Any, ...], every: bool = False,
                 prepare: bool | None = None) -> Any:
        """One statement, committed: alone in autocommit (no BEGIN/COMMIT round trips on the
        reserve step's path), else in a transaction of its own or within the caller's.
        Answers its first row, or every row. `prepare=False`: planned at every run (see
        `_BY_KEYS`)."""
        conn = self.conn
        if conn.autocommit:
            cur = conn.execute(sql, params, prepare=prepare)
        else:
            with conn.transaction():
                cur = conn.execute(sql, params, prepare=prepare)
        if every:
            return cur.fetchall()
        return cur.fetchone() if cur.description else None


class GroupCommitRequestStore:
    """A `RequestStore` whose `insert` shares one statement and one commit with the inserts
    of concurrent callers (`insert_many`, run on a committer thread: `store`'s connection
    provider must give each thread a connection of its own); every other call goes to
    `store`. An insert answers once its own row is committed, or raises what its batch
    raised (`TimeoutError` after `timeout_s`)."""

    def __init__(self, store: PostgresRequestStore, timeout_s: float = 10.0,
                 max_batch: int = 256) -> None:
        self.store = store
        self.timeout_s = timeout_s
        self.committer = GroupCommitter(store.insert_many, max_batch, "request-commit")

    def insert(self, request: NewRequest) -> Inserted:
        """Store a queued request, committed with whatever else is waiting."""
        return self.committer.submit(request, self.timeout_s)

    def find(self, request_id: str) -> Inserted | None:
        """What is stored for `request_id`, or None."""
        return self.store.find(request_id)

    def mark_reserved(self, marks: Sequence[ReservedMark]) -> None:
        """As `PostgresRequestStore.mark_reserved`."""
        self.store.mark_reserved(marks)

    def finish(self, records: Sequence[FinalRecord]) -> None:
        """As `PostgresRequestStore.finish`."""
        self.store.finish(records)

    def fetch(self, tenant: str, request_id: str) -> RequestView | None:
        """The tenant's own request, or None."""
        return self.store.fetch(tenant, request_id)

    def recent(self, tenant: str, limit: int) -> list[RequestView]:
        """The tenant's `limit` most recent requests, newest first."""
        return self.store.recent(tenant, limit)
