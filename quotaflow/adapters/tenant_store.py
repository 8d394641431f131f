"""Tenants and API keys. A key reads `qf_<key_id>_<secret>`; only a hash of the secret is kept."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

import psycopg

from quotaflow.ledger.store import PostgresLedger

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


@dataclass(frozen=True)
class Principal:
    tenant: str
    key_id: str
    rate_limit_per_min: int
    plan_period: str


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_tenant(conn: psycopg.Connection[Any], name: str, tokens: int, period: str = "month",
                  rate_limit_per_min: int = 600) -> str:
    """Create a tenant with a recurring grant of `tokens` per period; returns its first API key."""
    if not _NAME.match(name):
        raise ValueError("tenant name must be 1-63 of a-z, 0-9 and '-', starting alphanumeric")
    if tokens < 0:
        raise ValueError("tokens must not be negative")
    if period not in ("day", "month"):
        raise ValueError("period must be 'day' or 'month'")
    with conn.transaction():
        conn.execute("INSERT INTO tenants (tenant_id, plan_period, grant_tokens,"
                     " rate_limit_per_min) VALUES (%s, %s, %s, %s)",
                     (name, period, tokens, rate_limit_per_min))
        conn.execute("INSERT INTO ledger_streams (tenant_id) VALUES (%s)", (name,))
    ledger = PostgresLedger(conn)
    ledger.grant(name, tokens)
    return create_key(conn, name)


def create_key(conn: psycopg.Connection[Any], tenant: str) -> str:
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(24)
    conn.execute("INSERT INTO api_keys (key_id, tenant_id, secret_hash) VALUES (%s, %s, %s)",
                 (key_id, tenant, _hash(secret)))
    return f"qf_{key_id}_{secret}"


def authenticate(conn: psycopg.Connection[Any], api_key: str) -> Principal | None:
    parts = api_key.split("_", 2)
    if len(parts) != 3 or parts[0] != "qf":
        return None
    row = conn.execute(
        "SELECT k.secret_hash, t.tenant_id, t.rate_limit_per_min, t.plan_period "
        "FROM api_keys k JOIN tenants t USING (tenant_id) "
        "WHERE k.key_id = %s AND k.revoked_at IS NULL", (parts[1],)).fetchone()
    if row is None or not hmac.compare_digest(row[0], _hash(parts[2])):
        return None
    return Principal(tenant=row[1], key_id=parts[1], rate_limit_per_min=row[2],
                     plan_period=row[3])
