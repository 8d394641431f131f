"""The request read model (table `requests`): what `GET /v1/requests/{id}` answers."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg

_NAMESPACE = uuid.UUID("5b0f6c1e-3f7a-4d0e-9a51-6f1e0c2b7a10")


def request_id_for(tenant: str, source: str, ce_id: str) -> str:
    """(tenant, source, id) is the idempotency key of a client request."""
    return str(uuid.uuid5(_NAMESPACE, f"{tenant}\x00{source}\x00{ce_id}"))


def payload_hash(data: Any) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class NewRequest:
    request_id: str
    tenant: str
    key_id: str
    source: str
    ce_id: str
    payload_hash: str
    model: str


def insert_request(conn: psycopg.Connection[Any], r: NewRequest) -> tuple[bool, str, str]:
    """Insert a queued request; returns (created, stored payload hash, stored status)."""
    row = conn.execute(
        "INSERT INTO requests (request_id, tenant_id, key_id, source, ce_id, payload_hash, status,"
        " model) VALUES (%s, %s, %s, %s, %s, %s, 'queued', %s) ON CONFLICT (request_id) DO NOTHING"
        " RETURNING payload_hash, status",
        (r.request_id, r.tenant, r.key_id, r.source, r.ce_id, r.payload_hash, r.model)).fetchone()
    if row is not None:
        return True, row[0], row[1]
    row = conn.execute("SELECT payload_hash, status FROM requests WHERE request_id = %s",
                       (r.request_id,)).fetchone()
    assert row is not None
    return False, row[0], row[1]


def mark(conn: psycopg.Connection[Any], request_id: str, status: str, *,
         only_from: tuple[str, ...] = (), **fields: Any) -> None:
    """Set a request's status (and fields); `only_from` guards against moving backwards."""
    sets = ", ".join([f"{k} = %s" for k in fields] + ["status = %s", "updated_at = now()"])
    sql = f"UPDATE requests SET {sets} WHERE request_id = %s"
    params: list[Any] = [*fields.values(), status, request_id]
    if only_from:
        sql += " AND status = ANY(%s)"
        params.append(list(only_from))
    conn.execute(sql, params)


def fetch(conn: psycopg.Connection[Any], tenant: str, request_id: str) -> dict[str, Any] | None:
    cur = conn.execute(
        "SELECT request_id, status, model, model_version, prompt_tokens, completion_tokens,"
        " reserved_tokens, charged_tokens, output, reason, created_at, updated_at"
        " FROM requests WHERE request_id = %s AND tenant_id = %s", (request_id, tenant))
    row = cur.fetchone()
    if row is None:
        return None
    r = dict(zip([d.name for d in cur.description or []], row, strict=True))
    return {
        "request_id": r["request_id"],
        "status": r["status"],
        "output": r["output"],
        "usage": {k: r[k] for k in ("prompt_tokens", "completion_tokens", "reserved_tokens",
                                    "charged_tokens")},
        "model": {"name": r["model"], "version": r["model_version"]},
        "reason": r["reason"],
        "created_at": r["created_at"].isoformat(),
        "updated_at": r["updated_at"].isoformat(),
    }
