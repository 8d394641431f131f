"""An in-memory `TenantDirectory`: keys of the same `qf_<key_id>_<secret>` form as the
PostgreSQL directory, each to a principal, revocable."""

from __future__ import annotations

import secrets

from quotaflow.ports import Principal


class MemoryTenants:
    """Principals by key id, with the secret each key must present."""

    def __init__(self) -> None:
        self._keys: dict[str, tuple[str, Principal]] = {}

    def create_key(self, tenant: str, rate_limit_per_min: int = 600,
                   plan_period: str = "month") -> str:
        """Issue a key for `tenant` with these limits; returns the key."""
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(24)
        self._keys[key_id] = (secret, Principal(tenant, key_id, rate_limit_per_min, plan_period))
        return f"qf_{key_id}_{secret}"

    def revoke(self, api_key: str) -> None:
        """The key no longer authenticates."""
        parts = api_key.split("_", 2)
        if len(parts) == 3:
            self._keys.pop(parts[1], None)

    def authenticate(self, api_key: str) -> Principal | None:
        """The key's principal, or None for an unknown, malformed or revoked key."""
        parts = api_key.split("_", 2)
        if len(parts) != 3 or parts[0] != "qf":
            return None
        found = self._keys.get(parts[1])
        if found is None or not secrets.compare_digest(found[0], parts[2]):
            return None
        return found[1]
