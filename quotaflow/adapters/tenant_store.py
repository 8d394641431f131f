"""Tenants and API keys in PostgreSQL. A key reads `qf_<key_id>_<secret>`; only a hash of the
secret is kept. `PostgresTenants` is the `TenantDirectory` admit authenticates against, and
lists and revokes keys for the CLI; `create_tenant` and `create_key` make tenants and keys."""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg
from psycopg import errors

from quotaflow.adapters.api_keys import ApiKeyInfo, api_key_parts, new_key_parts
from quotaflow.ledger.store import PostgresLedger
from quotaflow.ports import Principal

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class TenantExists(ValueError):
    """A tenant of that name already exists."""


class UnknownTenant(LookupError):
    """No tenant of that name."""


class UnknownTeam(LookupError):
    """The tenant has no team of that name."""


def secret_hash(secret: str) -> str:
    """The digest stored for a key's secret (the secret itself is never stored)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def create_tenant(conn: psycopg.Connection[Any], name: str, tokens: int, period: str = "month",
                  rate_limit_per_min: int = 600, usd: int | None = None,
                  time_zone: str = "UTC") -> str:
    """Create a tenant with a recurring grant of `tokens` per period, at most `usd`
    micro-dollars a period (None: no money limit), its periods in `time_zone`; returns its
    first API key."""
    if not _NAME.match(name):
        raise ValueError("tenant name must be 1-63 of a-z, 0-9 and '-', starting alphanumeric")
    if tokens < 0:
        raise ValueError("tokens must not be negative")
    if period not in ("day", "month"):
        raise ValueError("period must be 'day' or 'month'")
    if usd is not None and usd < 0:
        raise ValueError("usd must not be negative")
    try:
        ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {time_zone!r} (an IANA name: Europe/Paris)") from None
    try:
        with conn.transaction():
            conn.execute("INSERT INTO tenants (tenant_id, plan_period, grant_tokens,"
                         " rate_limit_per_min, limit_usd, time_zone)"
                         " VALUES (%s, %s, %s, %s, %s, %s)",
                         (name, period, tokens, rate_limit_per_min, usd, time_zone))
            conn.execute("INSERT INTO ledger_streams (tenant_id) VALUES (%s)", (name,))
    except errors.UniqueViolation:
        raise TenantExists(f"tenant {name!r} already exists") from None
    PostgresLedger(conn).grant(name, tokens)
    return create_key(conn, name)


def create_key(conn: psycopg.Connection[Any], tenant: str, tpm: int = 0,
               max_inflight: int = 0, *, team: str | None = None, tokens: int | None = None,
               usd: int | None = None, rate_limit_per_min: int | None = None) -> str:
    """Issue another API key for `tenant`, with its tokens per minute and requests in flight
    (0: unlimited), in its `team` if given, limited to `tokens` and `usd` micro-dollars a
    period (None: unlimited at the key) and to `rate_limit_per_min` requests a minute (None:
    the tenant's); the returned key is the only copy of its secret."""
    if tpm < 0 or max_inflight < 0:
        raise ValueError("tokens per minute and max in flight must not be negative")
    if rate_limit_per_min is not None and rate_limit_per_min < 1:
        raise ValueError("a key's rate limit must be at least 1 request a minute")
    if (tokens is not None and tokens < 0) or (usd is not None and usd < 0):
        raise ValueError("a key's limits must not be negative")
    key_id, secret = new_key_parts()
    try:
        row = conn.execute(
            "INSERT INTO api_keys (key_id, tenant_id, secret_hash, tpm, max_inflight, team_id, "
            "limit_tokens, limit_usd, rate_limit_per_min) SELECT %s, tenant_id, %s, %s, %s, %s, "
            "%s, %s, %s FROM tenants WHERE tenant_id = %s RETURNING key_id",
            (key_id, secret_hash(secret), tpm, max_inflight, team, tokens, usd,
             rate_limit_per_min, tenant)).fetchone()
    except errors.ForeignKeyViolation:
        raise UnknownTeam(f"tenant {tenant!r} has no team {team!r}") from None
    if row is None:
        raise UnknownTenant(f"no tenant {tenant!r}")
    return f"qf_{key_id}_{secret}"


def revoke_key(conn: psycopg.Connection[Any], key_id: str) -> bool:
    """Revoke key `key_id` (or the key itself, given whole): it no longer authenticates.
    False when there is no such key; revoking a revoked key keeps its first revocation time."""
    parts = api_key_parts(key_id)
    key_id = parts[0] if parts else key_id
    row = conn.execute("UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) "
                       "WHERE key_id = %s RETURNING key_id", (key_id,)).fetchone()
    return row is not None


class PostgresTenants:
    """The `TenantDirectory` over the `tenants` and `api_keys` tables."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def authenticate(self, api_key: str) -> Principal | None:
        """The key's principal, or None for an unknown, malformed or revoked key. A malformed
        key is refused without a query. Its rate limit is the key's own, else its tenant's."""
        parts = api_key_parts(api_key)
        if parts is None:
            return None
        key_id, secret = parts
        row = self.conn.execute(
            "SELECT k.secret_hash, t.tenant_id, "
            "coalesce(k.rate_limit_per_min, t.rate_limit_per_min), t.plan_period, k.tpm, "
            "k.max_inflight, t.time_zone, k.team_id, k.limit_tokens, tm.limit_tokens "
            "FROM api_keys k JOIN tenants t USING (tenant_id) "
            "LEFT JOIN teams tm ON tm.tenant_id = k.tenant_id AND tm.team_id = k.team_id "
            "WHERE k.key_id = %s AND k.revoked_at IS NULL", (key_id,)).fetchone()
        if row is None or not hmac.compare_digest(row[0], secret_hash(secret)):
            return None
        return Principal(tenant=row[1], key_id=key_id, rate_limit_per_min=row[2],
                         plan_period=row[3], tpm=row[4], max_inflight=row[5],
                         time_zone=row[6], team_id=row[7], key_limit_tokens=row[8],
                         team_limit_tokens=row[9])

    def list_keys(self, tenant: str) -> list[ApiKeyInfo]:
        """The tenant's keys, oldest first, revoked ones included; `UnknownTenant` if none."""
        if self.conn.execute("SELECT 1 FROM tenants WHERE tenant_id = %s",
                             (tenant,)).fetchone() is None:
            raise UnknownTenant(f"no tenant {tenant!r}")
        rows = self.conn.execute("SELECT key_id, created_at, revoked_at, rate_limit_per_min "
                                 "FROM api_keys "
                                 "WHERE tenant_id = %s ORDER BY created_at, key_id",
                                 (tenant,)).fetchall()
        return [ApiKeyInfo(*row) for row in rows]

    def revoke(self, key_id: str) -> bool:
        """`revoke_key` on this connection."""
        return revoke_key(self.conn, key_id)
