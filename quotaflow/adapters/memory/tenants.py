"""An in-memory `TenantDirectory`: keys of the same `qf_<key_id>_<secret>` form as the
PostgreSQL directory, each to a principal, listable and revocable. `lookups` counts the
authentications that reached the directory's storage (a malformed key never does), as a
PostgreSQL query would."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from quotaflow.adapters.api_keys import ApiKeyInfo, api_key_parts, new_key_parts
from quotaflow.ports import Principal


@dataclass
class _Key:
    secret: str
    principal: Principal
    created_at: datetime
    revoked_at: datetime | None = None


class UnknownTenant(LookupError):
    """No key was ever issued to that tenant."""


class MemoryTenants:
    """Principals by key id, with the secret each key must present."""

    def __init__(self) -> None:
        self._keys: dict[str, _Key] = {}
        self.lookups = 0

    def create_key(self, tenant: str, rate_limit_per_min: int = 600,
                   plan_period: str = "month", tpm: int = 0, max_inflight: int = 0,
                   time_zone: str = "UTC") -> str:
        """Issue a key for `tenant` (its periods counted in `time_zone`) with these limits;
        returns the key."""
        key_id, secret = new_key_parts()
        self._keys[key_id] = _Key(secret, Principal(tenant, key_id, rate_limit_per_min,
                                                    plan_period, tpm, max_inflight, time_zone),
                                  datetime.now(UTC))
        return f"qf_{key_id}_{secret}"

    def revoke(self, key_id: str) -> bool:
        """Revoke key `key_id` (or the key itself, given whole); False when there is none."""
        parts = api_key_parts(key_id)
        found = self._keys.get(parts[0] if parts else key_id)
        if found is None:
            return False
        found.revoked_at = found.revoked_at or datetime.now(UTC)
        return True

    def list_keys(self, tenant: str) -> list[ApiKeyInfo]:
        """The tenant's keys, oldest first, revoked ones included; `UnknownTenant` if none."""
        keys = [ApiKeyInfo(key_id, k.created_at, k.revoked_at)
                for key_id, k in self._keys.items() if k.principal.tenant == tenant]
        if not keys:
            raise UnknownTenant(f"no tenant {tenant!r}")
        return sorted(keys, key=lambda k: k.created_at)  # stable: issue order on a tie

    def authenticate(self, api_key: str) -> Principal | None:
        """The key's principal, or None for an unknown, malformed or revoked key."""
        parts = api_key_parts(api_key)
        if parts is None:
            return None
        self.lookups += 1
        found = self._keys.get(parts[0])
        if found is None or found.revoked_at is not None \
                or not secrets.compare_digest(found.secret, parts[1]):
            return None
        return found.principal
